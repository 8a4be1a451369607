"""The grader against a zoo of hostile submissions, graded in one batch (``cvdl grade``).

Every submission is generated here from the lab's solution or its student version; each row of
the gradebook must have the expected status and points. Runs in bounded time: the infinite loop
is cut by the timeout while the others are graded in parallel.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cvdl.grading import cli, grade, labcheck, labs, limits

ROOT = Path(__file__).resolve().parents[1]
LAB = "01_convolution"
SOLUTION = ROOT / "solutions" / f"{LAB}.ipynb"
STUDENT = ROOT / "labs" / f"{LAB}.ipynb"
HAVE_BWRAP = grade.sandbox_kind(grade.Options().sandbox) == "bwrap"  # CVDL_SANDBOX=none tests the fallback
LIMITER = limits.whole_sandbox(2048 + limits.HEADROOM_MB, want=grade.Options().limits)  # CVDL_LIMITS=watchdog
CGROUP = LIMITER.kind != "watchdog"
SECRET = "cvdl-zoo-secret-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:12]
ZOO_TIMEOUT_S = 60  # generous: a loaded 2-core CI box can take 20 s to import torch

WRONG = {  # plausible but wrong answers: right shapes and types, wrong values
    "correlate2d": "def correlate2d(image, kernel):\n"
                   "    return np.zeros((image.shape[0] - kernel.shape[0] + 1, image.shape[1] - kernel.shape[1] + 1))",
    "conv2d": "def conv2d(x, w, b=None, stride=1, padding=0):\n"
              "    h = (x.shape[2] + 2 * padding - w.shape[2]) // stride + 1\n"
              "    v = (x.shape[3] + 2 * padding - w.shape[3]) // stride + 1\n"
              "    return np.zeros((x.shape[0], w.shape[0], h, v))",
    "image_gradients": "def image_gradients(image):\n    return np.zeros(image.shape), np.zeros(image.shape)",
    "orientation_histogram": "def orientation_histogram(image, bins=9):\n    return np.zeros(bins)",
}


def _answers(nb: dict) -> dict[str, str]:
    return {labs.meta(c)["grade_id"]: labs.source(c) for c in nb["cells"] if labs.role(c) == "solution"}


def _with(base: dict, answers: dict[str, str] | None = None, prefix: dict[str, str] | None = None) -> dict:
    """A copy of ``base`` with some solution cells replaced (``answers``) or prefixed (``prefix``)."""
    nb = json.loads(json.dumps(base))
    for cell in nb["cells"]:
        gid = labs.meta(cell).get("grade_id")
        if labs.role(cell) != "solution":
            continue
        if answers and gid in answers:
            cell["source"] = answers[gid]
        if prefix and gid in prefix:
            cell["source"] = prefix[gid] + "\n" + labs.source(cell)
    return nb


def _zoo(root: Path, victim: Path, gradebook: Path) -> dict[str, object]:
    sol, lab = labs.read_notebook(SOLUTION), labs.read_notebook(STUDENT)
    right = _answers(sol)
    zoo: dict[str, object] = {}
    zoo["correct"] = sol
    # correlate2d and gradients right; conv2d assumes square filters (passes the visible checks,
    # fails a hidden one); the histogram left unsolved
    square_only = right["conv2d"].replace("k, c2, fh, fw = w.shape", "k, c2, fh, _ = w.shape\n    fw = fh")
    assert square_only != right["conv2d"]
    zoo["partial"] = _with(lab, {"correlate2d": right["correlate2d"], "conv2d": square_only,
                                 "image_gradients": right["image_gradients"]})
    zoo["unsolved"] = lab
    zoo["infinite_loop"] = _with(lab, prefix={"correlate2d": "while True:\n    pass"})
    zoo["os_exit"] = _with(sol, prefix={"conv2d": "import os\nos._exit(3)"})
    zoo["segfault"] = _with(sol, prefix={"correlate2d": "import ctypes\nctypes.string_at(0)"})
    zoo["memory_bomb"] = _with(sol, prefix={"conv2d": (
        "def _bomb():\n    blocks = []\n    while True:\n"
        "        blocks.append(np.ones(50_000_000, dtype=np.uint8))\n_bomb()")})
    zoo["builtins"] = _with(sol, answers=WRONG, prefix={"correlate2d": (
        "import builtins\n"
        "builtins.abs = lambda x: 0\nbuiltins.all = lambda x: True\nbuiltins.any = lambda x: False\n"
        "builtins.AssertionError = type('AssertionError', (Exception,), {})\n"
        "builtins.max = lambda *a, **k: 0\nbuiltins.sum = lambda *a, **k: 0")})
    zoo["monkeypatch"] = _with(sol, answers=WRONG, prefix={"correlate2d": (
        "import numpy, torch\nimport cvdl.grading.labcheck as lc\n"
        "numpy.allclose = lambda *a, **k: True\nnumpy.isclose = lambda a, b, **k: numpy.ones_like(a, dtype=bool)\n"
        "numpy.array_equal = lambda *a, **k: True\nnumpy.testing.assert_allclose = lambda *a, **k: None\n"
        "torch.allclose = lambda *a, **k: True\n"
        "lc.compare = lambda *a, **k: None\nlc.check = lambda *a, **k: print('all cases passed')\n"
        "lc.normalise = lambda v, *a: ('none',)")})
    deleted = _with(sol, answers={"conv2d": WRONG["conv2d"]})
    deleted["cells"] = [c for c in deleted["cells"] if labs.role(c) != "test"]
    zoo["deleted_tests"] = deleted
    edited = _with(sol, answers={"conv2d": WRONG["conv2d"]})
    for cell in edited["cells"]:
        if labs.meta(cell).get("grade_id") == "test_conv2d":  # rewritten, re-weighted, made an "answer"
            cell["source"] = "pass  # all good"
            cell["metadata"]["nbgrader"].update(points=100, solution=True, grade=False)
    zoo["edited_tests"] = edited
    steal = (
        "import glob, json, os\n"
        f"_paths = [{str(SOLUTION)!r}, '../solutions/{LAB}.ipynb', '../../solutions/{LAB}.ipynb',\n"
        f"          '/work/main/solutions/{LAB}.ipynb', os.path.expanduser('~/solutions/{LAB}.ipynb')]\n"
        f"_paths += glob.glob('/*/*/solutions/{LAB}.ipynb') + glob.glob({str(gradebook.parent)!r} + '/.*/**/checks.json', recursive=True)\n"
        "for _p in _paths:\n"
        "    try:\n"
        "        _nb = json.load(open(_p))\n"
        "    except Exception:\n"
        "        continue\n"
        "    for _c in _nb.get('cells', []):\n"
        "        if _c.get('metadata', {}).get('nbgrader', {}).get('solution'):\n"
        "            exec(''.join(_c['source']), globals())\n"
        "    break\n")
    if HAVE_BWRAP:  # without a sandbox these would succeed (the fallback warns that it cannot stop them)
        zoo["read_solutions"] = _with(lab, answers={"correlate2d": steal})
    targets = [victim, root / "subs" / "correct" / f"{LAB}.ipynb", gradebook, SOLUTION.with_name("pwned.txt"),
               Path("/tmp/cvdl-zoo-pwned.txt")]
    vandal = "\n".join(f"try:\n    open({str(t)!r}, 'w').write('pwned')\nexcept Exception as e:\n    print(e)"
                       for t in targets)
    if HAVE_BWRAP:
        zoo["write_outside"] = _with(sol, prefix={"correlate2d": vandal})
    zoo["invalid_json"] = b'{"cells": [ this is not json'
    unknown = _with(sol)
    unknown["metadata"]["kernelspec"] = {"name": "no-such-kernel", "display_name": "?", "language": "python"}
    zoo["unknown_kernel"] = unknown
    huge = _with(sol, prefix={"correlate2d": "for _ in range(40):\n    print('x' * 1_000_000)"})
    for cell in huge["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": "y" * 3_000_000}]
            break
    zoo["huge_output"] = huge
    zoo["uses_library"] = _with(sol, answers={"conv2d": (  # passes every check, but is not the lab's work
        "import torch\nimport torch.nn.functional as F\n"
        "def conv2d(x, w, b=None, stride=1, padding=0):\n"
        "    t = lambda a: None if a is None else torch.from_numpy(np.asarray(a, dtype=np.float64))\n"
        "    return F.conv2d(t(x), t(w), t(b), stride=stride, padding=padding).numpy()")})
    zoo["missing"] = None

    # --- 1. nothing secret inside the sandbox: the job file, the job folder and the library
    leak = ("import glob, os\n"
            "_found = []\n"
            "for _p in ['../job.json'] + glob.glob('../**', recursive=True) + glob.glob('/job/**', recursive=True):\n"
            "    try:\n"
            "        _t = open(_p, errors='replace').read()\n"
            "    except Exception:\n"
            "        continue\n"
            "    _found += [f'{_p}: {_m}' for _m in ('BEGIN ' + 'HIDDEN', '_ref_' + 'gradients', 'seed=' + '21',\n"
            "                                         'ref' + 's.conv2d', 'expect' + '=') if _m in _t]\n"
            "if _found:\n"
            "    raise RuntimeError('LEAK ' + '; '.join(_found[:5]))\n")
    zoo["read_job"] = _with(sol, prefix={"orientation_histogram": leak})
    if HAVE_BWRAP:  # the fallback mode can read the library's references (it says so)
        zoo["read_library"] = _with(sol, prefix={"orientation_histogram": (
            "import glob, cvdl, os\n"
            "_lib = os.path.dirname(cvdl.__file__)\n"
            "_seen = [os.path.basename(p) for p in glob.glob(_lib + '/grad' + 'ing/*.py')]\n"
            "_bad = [n for n in _seen if n not in ('__init__.py', 'labcheck.py', 'labrun.py')]\n"
            "if _bad or not _seen:\n"
            "    raise RuntimeError('LEAK ' + ', '.join(_bad))\n")})
    # --- 2. the forbidden-name rule's bypasses, each a working shortcut without the rule
    zoo["bypass_names"] = _with(sol, answers={
        "correlate2d": ("import torch as _t\n"
                        "_f = getattr(_t.nn.functional, 'conv' + '2d')\n"
                        "def correlate2d(image, kernel):\n"
                        "    x = _t.from_numpy(np.asarray(image, dtype=np.float64))[None, None]\n"
                        "    w = _t.from_numpy(np.asarray(kernel, dtype=np.float64))[None, None]\n"
                        "    return _f(x, w)[0, 0].numpy()"),
        "conv2d": ("%run -m cvdl.conv\n"
                   "_lib = conv2d\n"
                   "def conv2d(x, w, b=None, stride=1, padding=0):\n"
                   "    return _lib(x, w, b, stride=stride, padding=padding)"),
        "image_gradients": ("def image_gradients(image):\n"
                            "    return _gradients_helper(image)"),
        "orientation_histogram": right["orientation_histogram"] + (
            "\n\nimport torch as _t2\n"
            "def _gradients_helper(image):\n"
            "    x = _t2.from_numpy(np.asarray(image, dtype=np.float64))[None, None]\n"
            "    kx = _t2.tensor([[[[-1.0, 0.0, 1.0]]]], dtype=_t2.float64)\n"
            "    gx = _t2.nn.functional.conv2d(x, kx, padding=(0, 1))[0, 0].numpy()\n"
            "    gy = _t2.nn.functional.conv2d(x, kx.transpose(2, 3), padding=(1, 0))[0, 0].numpy()\n"
            "    gx[:, [0, -1]] = 0\n"
            "    gy[[0, -1], :] = 0\n"
            "    return gx, gy\n")})
    zoo["bypass_cell_magic"] = _with(sol, answers={"conv2d": (
        "%%capture\n"
        "import torch\nimport torch.nn.functional as F\n"
        "def conv2d(x, w, b=None, stride=1, padding=0):\n"
        "    t = lambda a: None if a is None else torch.from_numpy(np.asarray(a, dtype=np.float64))\n"
        "    return F.conv2d(t(x), t(w), t(b), stride=stride, padding=padding).numpy()")})
    # --- 3. the grader's environment
    if HAVE_BWRAP:
        zoo["read_environ"] = _with(sol, prefix={"orientation_histogram": (
            "import glob, os\n"
            "_env = [open(p, 'rb').read() for p in glob.glob('/pr' + 'oc/*/environ') if os.access(p, os.R_OK)]\n"
            f"if any(b'CVDL_ZOO_SECRET' in e for e in _env) or 'CVDL_ZOO_SECRET' in os.environ:\n"
            "    raise RuntimeError('LEAK ' + str([e for e in _env if b'CVDL_ZOO_SECRET' in e])[:300])\n")})
    # --- 4. limits on the sandbox as a whole
    if HAVE_BWRAP:
        zoo["fill_shm"] = _with(sol, prefix={"orientation_histogram": (
            "_written = {}\n"
            "for _d in ('/dev/shm', '/tmp'):\n"
            "    _written[_d] = 0\n"
            "    try:\n"
            "        with open(_d + '/fill', 'wb') as _f:\n"
            "            for _ in range(128):\n"
            "                _f.write(b'x' * (8 << 20))\n"
            "                _f.flush()\n"
            "                _written[_d] += 8 << 20\n"
            "    except OSError:\n"
            "        pass\n"
            "if max(_written.values()) > (200 << 20):\n"
            "    raise RuntimeError(f'LEAK wrote {_written}')\n")})
    zoo["many_processes"] = _with(sol, prefix={"orientation_histogram": (
        "import os, time\n"
        "_n = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        _pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if _pid == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    _n += 1\n"
        "if _n >= 64:\n"
        "    raise RuntimeError(f'LEAK forked {_n}')\n")})
    zoo["shared_memory"] = _with(sol, prefix={"conv2d": (
        "import mmap\n"
        "_m = mmap.mmap(-1, 3300 << 20, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)\n"
        "_a = np.frombuffer(_m, dtype=np.uint8)\n"
        "for _i in range(0, len(_a), 64 << 20):\n"
        "    _a[_i:_i + (64 << 20):4096] = 1\n")})
    # --- 5. result files made to exhaust the verdict
    zoo["forged_results"] = _with(sol, prefix={"orientation_histogram": (
        "import json\n"
        "np.save('../out/results/big.npy', np.zeros(15_000_000, dtype=np.float32))\n"
        "_ref = ['ndarray', 'big.npy']\n"
        "json.dump([['list', [_ref] * 9000]] * 6, open('../out/results/test_conv2d.json', 'w'))\n"
        "open('../out/results/test_image_gradients.json', 'w').write('[' * 200000 + ']' * 200000)\n")})
    # a later part (torch allowed there) rewrites an earlier part's signed results and one of its arrays
    zoo["forged_signed"] = _with(sol, prefix={"orientation_histogram": (
        "import json, glob\n"
        "_d = json.load(open('../out/results/test_conv2d.json'))\n"
        "_d['payload']['results'] = _d['payload']['results'][::-1]\n"
        "json.dump(_d, open('../out/results/test_conv2d.json', 'w'))\n"
        "_a = sorted(glob.glob('../out/results/test_correlate2d_*.npy'))[0]\n"
        "np.save(_a, np.load(_a) + 1.0)\n")})
    zoo["nested_notebook"] = b'{"cells": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    # --- 7. a student's own grade_id, 50 kB long
    long_id = _with(sol)
    for _ in range(2):
        long_id["cells"].append({"cell_type": "code", "execution_count": None, "outputs": [], "source": "x = 1",
                                 "metadata": {"nbgrader": {"grade_id": "g" * 50_000, "solution": True, "grade": False}}})
    zoo["long_grade_id"] = long_id
    # --- 8. statuses
    zoo["forged_done"] = _with(sol, prefix={"conv2d": (
        "import json, os\n"
        "with open('../out/progress.jsonl', 'a') as _f:\n"
        "    for _i in range(40):\n"
        "        _f.write(json.dumps({'cell': _i, 'event': 'ok', 'seconds': 0}) + '\\n')\n"
        "    _f.write(json.dumps({'event': 'done'}) + '\\n')\n"
        "os._exit(0)")})
    zoo["byte_order_mark"] = b"\xef\xbb\xbf" + labs.dumps_notebook(sol).encode()
    zoo["wrong_lab"] = labs.read_notebook(ROOT / "solutions" / "02_conv_arithmetic.ipynb")
    return zoo


def _oddities(subs: Path) -> None:
    """Submissions that are not regular files, and student names that a gradebook must survive."""
    (subs / "link_to_solution").mkdir()
    (subs / "link_to_solution" / f"{LAB}.ipynb").symlink_to(SOLUTION)
    (subs / "link_folder").symlink_to(ROOT / "solutions", target_is_directory=True)
    (subs / "fifo").mkdir()
    os.mkfifo(subs / "fifo" / f"{LAB}.ipynb")
    (subs / "dev_zero").mkdir()
    (subs / "dev_zero" / f"{LAB}.ipynb").symlink_to("/dev/zero")
    (subs / "two_notebooks").mkdir()
    for n in ("draft.ipynb", "final.ipynb"):
        shutil.copy(STUDENT, subs / "two_notebooks" / n)
    for name in ("=1+2", "x y", "x_y-" + hashlib.sha256(b"x y").hexdigest()[:8], "Alice", "alice"):
        (subs / name).mkdir()       # no notebook: "missing" rows, each with its own feedback file


# student → (status, points, a phrase the reason must contain)
EXPECTED = {
    "correct": ("ok", 10, "4 of 4 parts passed"),
    "partial": ("ok", 4, "2 of 4 parts passed"),
    "unsolved": ("ok", 0, "0 of 4 parts passed"),
    "infinite_loop": ("timed out", 0, "answer cell 'correlate2d'"),
    "os_exit": ("crashed", 2, "exited with status 3 while running answer cell 'conv2d'"),
    "segfault": ("crashed", 0, "SIGSEGV"),
    "memory_bomb": ("crashed", 7, "memory limit"),
    "builtins": ("ok", 0, "0 of 4 parts passed"),
    "monkeypatch": ("ok", 0, "0 of 4 parts passed"),
    "deleted_tests": ("ok", 7, "3 of 4 parts passed"),
    "edited_tests": ("ok", 7, "3 of 4 parts passed"),
    "read_solutions": ("ok", 0, "0 of 4 parts passed"),
    "write_outside": ("ok", 10, "4 of 4 parts passed"),
    "invalid_json": ("invalid notebook", 0, "not a readable notebook"),
    "unknown_kernel": ("ok", 10, "no-such-kernel"),
    "huge_output": ("ok", 10, "4 of 4 parts passed"),
    "uses_library": ("ok", 7, "answer cell 'conv2d' uses torch"),
    "missing": ("missing", 0, "no submission"),
    "not_on_time": ("missing", 0, "no submission"),   # on the roster, nothing handed in
    # 1. secrets
    "read_job": ("ok", 10, "4 of 4 parts passed"),
    "read_library": ("ok", 10, "4 of 4 parts passed"),
    # 2. bypasses of the forbidden-name rule
    "bypass_names": ("ok", 0, "all parts score 0"),     # %run, getattr with a computed name: tampering tools
    "bypass_cell_magic": ("ok", 7, "answer cell 'conv2d' uses torch"),
    # 3. environment
    "read_environ": ("ok", 10, "4 of 4 parts passed"),
    # 4. whole-sandbox limits (a cgroup makes fork fail; the watchdog kills the sandbox)
    "fill_shm": ("ok", 10, "4 of 4 parts passed"),
    # (os.fork and mmap are tools of tampering too: all parts score 0, whatever the limit did)
    "many_processes": ("ok", 0, "all parts score 0") if CGROUP else ("crashed", 0, "process limit"),
    "shared_memory": ("crashed", 0, "memory limit"),
    # 5. the verdict's reading
    "forged_results": ("ok", 5, "2 of 4 parts passed"),
    "forged_signed": ("ok", 5, "2 of 4 parts passed"),
    "nested_notebook": ("invalid notebook", 0, "nested too deeply"),
    # 6. not regular files
    "link_to_solution": ("invalid notebook", 0, "symbolic link"),
    "link_folder": ("invalid notebook", 0, "symbolic link"),
    "fifo": ("invalid notebook", 0, "not a regular file"),
    "dev_zero": ("invalid notebook", 0, "symbolic link"),
    # 7. gradebook integrity
    "long_grade_id": ("ok", 10, "appears twice"),
    "=1+2": ("missing", 0, "no notebook"),
    "x y": ("missing", 0, "no notebook"),
    "x_y-" + hashlib.sha256(b"x y").hexdigest()[:8]: ("missing", 0, "no notebook"),
    "Alice": ("missing", 0, "no notebook"),
    "alice": ("missing", 0, "no notebook"),
    # 8. statuses
    "forged_done": ("crashed", 2, "exited before the end of the notebook while running answer cell 'conv2d'"),
    "byte_order_mark": ("ok", 10, "4 of 4 parts passed"),
    "wrong_lab": ("ok", 0, "none of this lab's answer cells is in the notebook"),
    "two_notebooks": ("missing", 0, "2 notebooks (draft.ipynb, final.ipynb), none named 01_convolution.ipynb"),
}
BWRAP_ONLY = ("read_solutions", "write_outside", "read_library", "read_environ", "fill_shm")


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    subs = root / "subs"
    victim = root / "victim.txt"
    victim.write_text("original")
    gradebook = root / "grades.csv"
    for name, nb in _zoo(root, victim, gradebook).items():
        folder = subs / name
        folder.mkdir(parents=True)
        if nb is None:
            (folder / "notes.txt").write_text("forgot to upload")
        elif isinstance(nb, bytes):
            (folder / f"{LAB}.ipynb").write_bytes(nb)
        else:
            labs.write_notebook(nb, folder / f"{LAB}.ipynb")
    _oddities(subs)
    before = {p: p.read_bytes() for p in subs.rglob("*.ipynb") if p.is_file() and not p.is_symlink()}
    opts = grade.Options(timeout=ZOO_TIMEOUT_S, memory_mb=2048, jobs=3, progress=False)
    os.environ["CVDL_ZOO_SECRET"] = SECRET     # an instructor's token in the grader's environment
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        results = grade.grade(LAB, subs, gradebook, opts, roster=["not_on_time"], log=lambda m: None)
    finally:
        del os.environ["CVDL_ZOO_SECRET"]
    seconds = time.perf_counter() - t0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return {"root": root, "subs": subs, "victim": victim, "gradebook": gradebook, "results": results,
            "seconds": seconds, "before": before, "opts": opts, "grown_mb": grown_mb}


@pytest.mark.notebooks
def test_zoo_every_row_has_the_expected_status_and_points(zoo_run):
    rows = {r["student"]: r for r in csv.DictReader(zoo_run["gradebook"].open())}
    expected = {k: v for k, v in EXPECTED.items() if HAVE_BWRAP or k not in BWRAP_ONLY}
    assert set(rows) == {grade._cell(k) for k in expected}, f"gradebook rows {sorted(rows)}"
    wrong = []
    for student, (status, points, phrase) in expected.items():
        row = rows[grade._cell(student)]
        if row["status"] != status or float(row["total"]) != points or phrase not in row["reason"] \
                or "LEAK" in row["reason"]:
            wrong.append(f"{student}: got {row['status']!r} {row['total']} ({row['reason']!r}); "
                         f"expected {status!r} {points} with {phrase!r}")
        assert float(row["max"]) == 10
    assert not wrong, "\n".join(wrong)
    assert zoo_run["seconds"] < 6 * ZOO_TIMEOUT_S, f"the zoo took {zoo_run['seconds']:.0f} s"


@pytest.mark.notebooks
def test_zoo_per_part_points_and_feedback_hide_the_hidden_tests(zoo_run):
    rows = {r["student"]: r for r in csv.DictReader(zoo_run["gradebook"].open())}
    partial = rows["partial"]
    assert (partial["test_correlate2d"], partial["test_conv2d"], partial["test_image_gradients"],
            partial["test_orientation_histogram"]) == ("2", "0", "2", "0")
    fb = (zoo_run["gradebook"].with_name("grades-feedback") / "partial.txt").read_text()
    assert "test_conv2d: 0/3" in fb and "hidden checks: 4 of 5 passed" in fb
    solution_text = SOLUTION.read_text()
    hidden = [labs.source(c) for c in labs.read_notebook(SOLUTION)["cells"] if labs.role(c) == "test"]
    for f in zoo_run["gradebook"].with_name("grades-feedback").glob("*.txt"):
        text = f.read_text()
        assert "BEGIN HIDDEN TESTS" not in text and "seed=21" not in text and "_ref_gradients" not in text
        assert "BEGIN SOLUTION" not in text
    assert hidden and "BEGIN HIDDEN TESTS" in solution_text


@pytest.mark.notebooks
def test_zoo_nothing_secret_reaches_feedback_and_the_gradebook_is_safe(zoo_run):
    book = zoo_run["gradebook"].read_text()
    rows = list(csv.DictReader(zoo_run["gradebook"].open()))
    fb_dir = zoo_run["gradebook"].with_name("grades-feedback")
    texts = {f.name: f.read_text() for f in fb_dir.glob("*.txt")}
    for where, text in list(texts.items()) + [("grades.csv", book)]:
        assert "LEAK" not in text and SECRET not in text, where
    # one feedback file per row (names that differ only by case or by sanitising stay apart)
    assert len(texts) == len(rows), sorted(texts)
    assert "'=1+2" in [r["student"] for r in rows]                     # not a formula
    assert all(not r["student"].startswith(("=", "+", "-", "@")) for r in rows)
    assert max(len(r["reason"]) for r in rows) <= grade.MAX_REASON + 40
    long_row = next(r for r in rows if r["student"] == "long_grade_id")
    assert "g" * 100 not in long_row["reason"]
    # the limits in force are in every graded row
    assert all(r["limits"].startswith("whole sandbox: 3072 MB, 64 processes") for r in rows if r["status"] != "missing"
               and r["status"] != "invalid notebook"), {r["student"]: r["limits"] for r in rows}
    # feedback says why a submission crashed or timed out, names the lab and the student, shows the
    # failed visible call, and says "not attempted" rather than repeating NotImplementedError
    assert "status: crashed — the Python process was killed by SIGSEGV" in texts["segfault.txt"]
    assert "status: timed out — stopped after" in texts["infinite_loop.txt"]
    assert texts["partial.txt"].startswith(f"lab {LAB} — feedback for partial\n")
    assert "conv2d(<array 1×1×5×5 float32>, <array 1×1×3×3 float32>): result" in texts["deleted_tests.txt"], \
        texts["deleted_tests.txt"]
    assert texts["unsolved.txt"].count("not attempted") == 4 and "NotImplementedError:" not in texts["unsolved.txt"]
    assert "(code given with the lab)" not in texts["unsolved.txt"] and "solution cell" not in texts["unsolved.txt"]
    # the verdict read the forged results within its budget (the grader did not load one array 9 000 times)
    assert zoo_run["grown_mb"] < 600, f"the grader grew by {zoo_run['grown_mb']:.0f} MB"
    assert not list((zoo_run["gradebook"].with_name(".grades.cvdl") / "jobs").iterdir())


@pytest.mark.notebooks
def test_zoo_could_not_write_outside_its_folder(zoo_run):
    if not HAVE_BWRAP:
        pytest.skip("not in the bubblewrap sandbox: the fallback mode cannot stop writes (it says so)")
    assert zoo_run["victim"].read_text() == "original"
    for p, data in zoo_run["before"].items():
        assert p.read_bytes() == data, f"{p} was modified during grading"
    assert not SOLUTION.with_name("pwned.txt").exists()
    assert not Path("/tmp/cvdl-zoo-pwned.txt").exists()
    assert "pwned" not in zoo_run["gradebook"].read_text().splitlines()[0]


@pytest.mark.notebooks
def test_zoo_rerun_resumes_without_executing(zoo_run):
    t0 = time.perf_counter()
    again = grade.grade(LAB, zoo_run["subs"], zoo_run["gradebook"], zoo_run["opts"], roster=["not_on_time"],
                        log=lambda m: None)
    assert time.perf_counter() - t0 < 15
    ran = [r for r in again if r.status not in ("missing", "invalid notebook")]  # the others need no sandbox
    assert ran and all(r.resumed for r in ran), [r.student for r in ran if not r.resumed]
    assert {r.student: r.total for r in again} == {r.student: r.total for r in zoo_run["results"]}


@pytest.mark.notebooks
def test_cli_regrades_only_what_changed(zoo_run, capsys):
    (zoo_run["subs"] / "invalid_json" / f"{LAB}.ipynb").write_bytes(b"still not json")
    code = cli.main(["grade", "01", str(zoo_run["subs"]), "--out", str(zoo_run["gradebook"]), "--quiet",
                     "--timeout", str(ZOO_TIMEOUT_S)])
    out = capsys.readouterr()
    n = sum(1 for d in zoo_run["subs"].iterdir())             # no roster this time
    done = sum(1 for r in zoo_run["results"] if r.sha256 and r.student != "invalid_json")
    assert code == 0 and f"graded {n} submission(s)" in out.out, out
    m = re.search(r"resuming: (\d+) already graded, (\d+) to grade, (\d+) without a notebook to grade", out.err)
    assert m and int(m[1]) == done and sum(map(int, m.groups())) == n, out.err
    rows = {r["student"]: r for r in csv.DictReader(zoo_run["gradebook"].open())}
    assert rows["invalid_json"]["status"] == "invalid notebook" and rows["correct"]["total"] == "10"


@pytest.mark.notebooks
@pytest.mark.parametrize("lab", [p.stem for p in sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
                                 if p.stem != LAB])  # LAB itself is graded by the zoo above
def test_solution_scores_full_marks_and_the_lab_zero(lab, tmp_path):
    subs = tmp_path / "subs"
    for who, src in (("solution", ROOT / "solutions"), ("lab", ROOT / "labs")):
        (subs / who).mkdir(parents=True)
        shutil.copy(src / f"{lab}.ipynb", subs / who / f"{lab}.ipynb")
    results = {r.student: r for r in grade.grade(lab, subs, tmp_path / "g.csv",
                                                  grade.Options(timeout=120, jobs=2, progress=False),
                                                  log=lambda m: None)}
    sol = results["solution"]
    auto = sum(p for _, p in labs.parts(labs.read_notebook(ROOT / "solutions" / f"{lab}.ipynb")))
    assert sol.status == "ok" and sol.total == auto, (sol.status, sol.reason, sol.feedback[-1500:])
    for gid, pts in labs.manual_parts(labs.read_notebook(ROOT / "solutions" / f"{lab}.ipynb")):
        assert sol.max_total >= auto + pts and sol.written[gid].strip(), "the model answer is exported"
        assert results["lab"].written[gid] == "", "the lab's stub is no answer"
    assert results["lab"].status == "ok" and results["lab"].total == 0, results["lab"].reason
    assert 3 <= len(results["lab"].points) <= 6


# ----------------------------------------------------------------------------------------------
# The verdict's building blocks (fast)
# ----------------------------------------------------------------------------------------------


def test_compare_checks_type_shape_and_values():
    n = labcheck.normalise
    a = np.arange(6.0).reshape(2, 3)
    assert labcheck.compare(n(a), n(a + 1e-9)) is None
    assert "shape" in labcheck.compare(n(a.T), n(a))
    assert "values differ" in labcheck.compare(n(a + 1), n(a))
    assert "dtype" in labcheck.compare(n(a.astype(int)), n(a))
    assert "numpy array" in labcheck.compare(n(a.tolist()), n(a))
    assert labcheck.compare(n((a, 3)), n([a, 3])) is None
    assert "expected 3" in labcheck.compare(n(4), n(3))
    assert "expected a number" in labcheck.compare(n("3"), n(3.0))
    assert "raised ValueError" in labcheck.compare(labcheck._call(int, ["x"], {}, None), n(3))
    assert labcheck.compare(labcheck._call(int, ["x"], {}, None), ("error", ["ValueError"], "")) is None
    assert "nan" not in str(labcheck.compare(n(np.array([np.nan])), n(np.array([np.nan]))))


def test_results_are_read_back_without_pickle_or_symlinks(tmp_path):
    tree = labcheck.dump(labcheck.normalise({"x": np.ones(3), "n": 2}), str(tmp_path), "r")
    back = labcheck.load(tree, str(tmp_path))
    assert back[0] == "dict" and back[1]["n"] == ("int", 2) and np.array_equal(back[1]["x"][1], np.ones(3))
    for bad in (["ndarray", "../../etc/passwd"], ["ndarray", "/abs.npy"], ["int", True], ["bogus"], "x",
                ["error", "ValueError", ""]):
        with pytest.raises(ValueError):
            labcheck.load(bad, str(tmp_path))
    np.save(tmp_path / "obj.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        grade._read_array(str(tmp_path / "obj.npy"))
    secret = tmp_path / "secret.json"
    secret.write_text("[]")
    (tmp_path / "link.json").symlink_to(secret)
    assert grade._read_untrusted(tmp_path / "link.json", 1000) is None
    assert grade._read_untrusted(secret, 1000) == b"[]"
    assert grade._read_untrusted(secret, 1) is None  # over the size cap


def test_harness_job_holds_no_test_source(tmp_path, monkeypatch):
    """What goes into the sandbox: the answers, the given cells and each test cell as a name only."""
    seen = {}
    real_run = grade._run

    def spy(job_dir, *a, **k):
        if json.loads((job_dir / "job.json").read_text())["mode"] != "harness":   # the key being built
            return real_run(job_dir, *a, **k)
        seen["job"] = (job_dir / "job.json").read_text()
        inputs = a[0] if a and a[0] is not None else job_dir / "inputs"   # mounted (bwrap) or copied
        seen["inputs"] = sorted(p.name for p in Path(inputs).iterdir())
        return real_run(job_dir, *a, **k)

    monkeypatch.setattr(grade, "_run", spy)
    subs = tmp_path / "subs"
    (subs / "s").mkdir(parents=True)
    shutil.copy(SOLUTION, subs / "s" / f"{LAB}.ipynb")
    r = grade.grade(LAB, subs, tmp_path / "g.csv", grade.Options(timeout=120, jobs=1, progress=False),
                    log=lambda m: None)[0]
    assert r.status == "ok" and r.total == 10, r.reason
    job = json.loads(seen["job"])
    assert job["mode"] == "harness"
    tests = [c for c in job["cells"] if c["kind"] == "test"]
    assert tests and all(set(c) == {"kind", "part"} for c in tests)
    for marker in ("BEGIN HIDDEN", "_ref_gradients", "refs.", "check(", "expect=", "want"):
        assert marker not in seen["job"], marker
    assert seen["inputs"] and not any(re.search(r"_w_\d+\.npy$", n) for n in seen["inputs"])  # no expected outputs


def test_answer_violations_close_the_known_bypasses():
    sol = labs.read_notebook(SOLUTION)
    right = _answers(sol)
    body = right["conv2d"]
    cases = {
        "getattr(F, 'conv' + '2d')": ("import torch.nn.functional as Fn\n" + body.replace("### BEGIN SOLUTION", "_f = getattr(Fn, 'conv' + '2d')\n    ### BEGIN SOLUTION"), "read by a computed name"),
        "%run -m": ("%run -m cvdl.conv\n_c = conv2d\n" + body, "%run"),
        "%%capture": ("%%capture\nimport torch\n" + body, "uses torch"),
        "%%time": ("%%time\nfrom cvdl.conv import conv2d as _c\n" + body, "uses cvdl.conv"),
        "refs from the given cell": (body + "\n_r = refs.conv2d", "refs"),
        "eval": (body + "\n_e = eval('1')", "eval"),
        "exec": (body + "\nexec('x = 1')", "exec"),
        "__import__": (body + "\n_m = __import__('math')", "__import__"),
        "importlib": ("import importlib\n" + body, "importlib"),
        "sys.modules": ("import sys as _s\n_m = _s.modules\n" + body, "sys.modules"),
        "a dunder": (body + "\n_d = np.__dict__", "__dict__"),
        "a shell command": ("!ls\n" + body, "shell command"),
        "a module attribute set": ("np.my_conv = None\n" + body, "modifies the module attribute np.my_conv"),
        "setattr on a module": ("setattr(np, 'x' + 'y', None)\n" + body, "modifies the module attribute"),
        "a bare name from elsewhere": (body + "\n_c = convolve", "uses convolve"),
        "gc.get_objects": ("import gc\n_o = gc.get_objects()\n" + body, "gc.get_objects"),
        # routes to the runner's frames and token (a second review): each voids the submission
        "traceback.walk_stack": ("import traceback\n_s = traceback.walk_stack(None)\n" + body, "traceback"),
        "logging.currentframe": ("import logging\n_f = logging.currentframe()\n" + body, "logging.currentframe"),
        "sys.exc_info": ("import sys\n_t = sys.exc_info()\n" + body, "sys.exc_info"),
        "exit._ip": ("_r = exit._ip\n" + body, "exit"),
        "get_ipython as a value": ("_g = get_ipython\n" + body, "get_ipython passed around"),
        "timeit of a string": ("import timeit\ntimeit.timeit('1', number=1)\n" + body, "timeit"),
        "%timeit -n1 hiding code": ("%timeit -n1 -r1 _b = cvdl.conv.conv2d\n" + body, "cvdl.conv, which this part does not allow"),
        "getattr on a module": ("_f = getattr(cvdl.conv, 'conv' + '2d')\n" + body, "read by a computed name"),
        "vars of a module": ("import torch as _t\n_f = vars(_t)['conv' + '2d']\n" + body, "read by a computed name"),
        "a module alias by assignment": ("_m = cvdl\n_f = _m.conv.conv2d\n" + body, "cvdl.conv"),
        "a course module's import": ("_nn = cvdl.art.nn\n" + body, "torch.nn"),
        "os.sys.modules": ("import os\n_m = os.sys.modules\n" + body, "os.sys.modules"),
        "/proc/self/mem": ("_m = open('/proc/self/mem', 'rb')\n" + body, "/proc/self/mem"),
        "threads": ("import threading\n" + body, "threading"),
        "%config that runs code": ("%config Foo.bar = __import__('os')\n" + body, "%config"),
    }
    for what, (src, phrase) in cases.items():
        got = labs.answer_violations(sol, dict(right, conv2d=src)).get("conv2d", "")
        assert phrase in got, (what, got)
    # a helper in another answer cell is checked against the caller's list
    helper = right["orientation_histogram"] + "\nimport torch as _t\ndef _helper(x):\n    return _t.zeros(1)\n"
    got = labs.answer_violations(sol, dict(right, conv2d=body + "\n_h = _helper", orientation_histogram=helper))
    assert "in answer cell 'orientation_histogram', which it calls" in got.get("conv2d", ""), got
    assert "orientation_histogram" not in got      # torch is allowed there
    # ... also when handed over as a default argument; but a test line of another cell that binds
    # a name the function uses as a parameter (image) is not a call into that cell
    handed = right["orientation_histogram"] + "\nimport torch\n_tc = torch.nn.functional.conv2d\n"
    got = labs.answer_violations(sol, dict(right, orientation_histogram=handed,
                                            conv2d="def conv2d(x, w, b=None, stride=1, padding=0, _f=_tc):\n    return _f(x, w)"))
    assert "which it calls" in got.get("conv2d", ""), got
    noise = "import torch\nimage = torch.rand(8, 8).numpy()\nout = 1\n" + right["orientation_histogram"]
    assert labs.answer_violations(sol, dict(right, orientation_histogram=noise)) == {}
    # a module that is not installed is a plain forbidden use (an ImportError in the sandbox), not tampering
    got = labs.answer_violations(sol, dict(right, conv2d="import cv2\n" + body))["conv2d"]
    assert "cv2" in got and labs.VOIDS not in got
    # what honest answers do is not flagged: magics that only time, docstrings, setattr on a model
    for ok in ("%%time\n" + body, "%time _x = 1\n" + body, "%matplotlib inline\n" + body,
               "%timeit -n1 -r1 sum([1, 2])\n" + body, "%config InlineBackend.figure_format = 'retina'\n" + body,
               "%load_ext autoreload\n%autoreload 2\n" + body, "np.einsum?\n" + body,
               "import gc\ngc.collect()\n" + body, "from types import SimpleNamespace\n_c = SimpleNamespace()\n" + body,
               "class _A:\n    def f(self, n):\n        return getattr(self, n, None)\n" + body,
               "class _A:\n    def __init__(self, **k):\n        self.code = 1\n        self.__dict__.update(k)\n" + body,
               "def _f(args):\n    return vars(args)\n" + body,
               body.replace('"""x [N', '"""we convolve and correlate with torch-like shapes; x [N'),
               "class _A:\n    def __init__(self):\n        setattr(self, 'a' + 'b', 1)\n" + body):
        assert "conv2d" not in labs.answer_violations(sol, dict(right, conv2d=ok)), ok
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):   # every lab's own solution passes
        nb = labs.read_notebook(path)
        assert labs.answer_violations(nb, _answers(nb)) == {}, path.name


def test_safe_names_are_one_to_one():
    names = ["x y", "x_y-" + hashlib.sha256(b"x y").hexdigest()[:8], "x_y", "Alice", "alice", "ALICE", "a" * 200,
             "a" * 201, "=HYPERLINK(1)", ".hidden", "_hidden", "é", "e"]
    files = [grade._safe_name(n) for n in names]
    assert len({f.lower() for f in files}) == len(names), files     # also on a case-insensitive disk
    assert all(len(f) < 100 and "/" not in f and not f.startswith(".") for f in files)
    assert grade._safe_name("bob") == "bob"
    assert grade._cell("=1+2") == "'=1+2" and grade._cell("@SUM(A1)") == "'@SUM(A1)" and grade._cell("a\nb") == "a b"


def test_the_verdict_reads_each_array_once_within_a_budget(tmp_path):
    big = np.zeros(4_000_000, dtype=np.float32)            # 16 MB
    np.save(tmp_path / "big.npy", big)
    tree = ["list", [["ndarray", "big.npy"]] * 5000]
    reader = grade._ArrayReader()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = labcheck.load(tree, str(tmp_path), reader)
    assert len(got[1]) == 5000 and got[1][0][1] is got[1][-1][1]          # one array, read once
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024 < 200
    with pytest.raises(ValueError, match="larger than the grader reads"):
        labcheck.load(tree, str(tmp_path), grade._ArrayReader(budget=1 << 20))
    with pytest.raises(ValueError, match="nested too deeply"):
        grade._parse_json(b"[" * 100_000 + b"]" * 100_000)
    deep = ["list", []]
    for _ in range(40):
        deep = ["list", [deep]]
    with pytest.raises(ValueError, match="nested too deeply"):
        labcheck.load(deep, str(tmp_path))


def test_find_submissions_layouts(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "01_x.ipynb").write_text("{}")
    (tmp_path / "b" / "01_x").mkdir(parents=True)
    (tmp_path / "b" / "01_x" / "01_x.ipynb").write_text("{}")
    (tmp_path / "c.ipynb").write_text("{}")
    (tmp_path / "d").mkdir()
    found = dict(grade.find_submissions(tmp_path, "01_x", roster=["e"]))
    assert set(found) == {"a", "b", "c", "d", "e"}
    assert found["d"] is None and found["e"] is None and found["b"].name == "01_x.ipynb"


def test_grading_key_depends_on_every_grading_module(monkeypatch):
    """A change to any module the automatic grades depend on (or to cvdl/_io.py, which they use)
    builds a new key; the modules that only present grades (the gradebook, reports, the command
    line, the nbgrader course builder) do not. Every module of cvdl/grading is one or the other."""
    import pathlib

    base = grade._machinery_digest()
    folder = pathlib.Path(grade.__file__).parent
    grading = {"__init__.py", "_refs.py", "grade.py", "labcheck.py", "labrun.py", "labs.py", "limits.py"}
    presenting = {"cli.py", "gradebook.py", "report.py", "nbgrader_course.py"}
    assert {f.name for f in folder.glob("*.py")} == grading | presenting, "a new module: which kind is it?"
    original = pathlib.Path.read_bytes
    for name in sorted(grading | presenting) + ["../_io.py"]:
        changed = (folder / name).resolve()
        monkeypatch.setattr(pathlib.Path, "read_bytes",
                            lambda self, _c=changed: original(self) + (b"\n# edited" if self.resolve() == _c else b""))
        if name in presenting:
            assert grade._machinery_digest() == base, f"editing {name} would grade everything again"
        else:
            assert grade._machinery_digest() != base, f"editing {name} would not build a new grading key"
    monkeypatch.setattr(pathlib.Path, "read_bytes", original)
    assert grade._machinery_digest() == base


def _processes_with(marker: str) -> list[int]:
    """Processes (not this one) whose command line contains ``marker``."""
    hits = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        hits.append(int(p))
            except OSError:
                pass
    return hits


def _wait(condition, seconds: float) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.notebooks
def test_a_killed_grader_leaves_no_process_and_the_next_run_cleans_up(tmp_path):
    marker = f"{int(time.time() * 1000) % 100000}.5"          # a sleep only this test starts
    subs = tmp_path / "subs"
    (subs / "loop").mkdir(parents=True)
    labs.write_notebook(_with(labs.read_notebook(STUDENT), prefix={"correlate2d": (
        f"import subprocess\nsubprocess.Popen(['sleep', '{marker}'])\nwhile True:\n    pass")}),
        subs / "loop" / f"{LAB}.ipynb")
    out, state = tmp_path / "g.csv", tmp_path / ".g.cvdl"
    cmd = [sys.executable, "-m", "cvdl.grading.cli", "grade", LAB, str(subs), "--out", str(out), "--quiet",
           "--jobs", "1", "--timeout", "120"]
    # killed while the grading key is built (the solution runs outside the sandbox, in .key-*)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait(lambda: _processes_with(str(state / ".key-")), 60), "the key build never started"
    p.kill()
    p.wait()
    assert _wait(lambda: not _processes_with(str(state)), 10), "the key build outlived the grader"
    # killed while a submission runs (it started a process of its own)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait(lambda: _processes_with(marker), 120), "the submission never started"
    assert list((state / "jobs").glob("job-*"))
    p.kill()
    p.wait()
    assert _wait(lambda: not _processes_with(marker) and not _processes_with(str(state)), 10), \
        "the sandbox outlived the grader"
    # the next run (here on an empty folder, same gradebook) removes what the killed one left
    (tmp_path / "empty").mkdir()
    grade.grade(LAB, tmp_path / "empty", out, grade.Options(timeout=60, jobs=1, progress=False), log=lambda m: None)
    assert not list((state / "jobs").iterdir()) and not list(state.glob(".key-*"))
    for base in getattr(LIMITER, "bases", []):     # and the killed grader's cgroups
        assert not list(base.glob(f"cvdl-{p.pid}-job-*")), base


@pytest.mark.notebooks
@pytest.mark.skipif(not HAVE_BWRAP, reason="the sandbox's mounts are what this checks")
def test_an_interpreter_reached_through_a_symlink_runs_in_the_sandbox(tmp_path):
    link = tmp_path / "linked"
    link.symlink_to(Path(sys.prefix).parent, target_is_directory=True)
    python = link / Path(sys.prefix).name / Path(sys.executable).relative_to(sys.prefix)
    assert python.exists() and str(Path(sys.prefix).parent) not in str(python)
    subs = tmp_path / "subs"
    (subs / "s").mkdir(parents=True)
    shutil.copy(SOLUTION, subs / "s" / f"{LAB}.ipynb")
    r = subprocess.run([str(python), "-m", "cvdl.grading.cli", "grade", LAB, str(subs), "--out",
                        str(tmp_path / "g.csv"), "--quiet", "--sandbox", "bwrap", "--timeout", "120"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    row = next(csv.DictReader((tmp_path / "g.csv").open()))
    assert (row["status"], row["total"]) == ("ok", "10"), row


# ----------------------------------------------------------------------------------------------
# The instructor's side (issue 18): the course in front of you, rosters, the gradebook's folder
# ----------------------------------------------------------------------------------------------


def test_commands_act_on_the_course_in_the_current_folder(tmp_path, monkeypatch, capsys):
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "solutions", clone / "solutions")
    shutil.copytree(ROOT / "labs", clone / "labs")
    (clone / "labs" / "02_conv_arithmetic.ipynb").unlink()
    (clone / "notebooks").mkdir()
    monkeypatch.chdir(clone / "notebooks")                 # anywhere inside the clone
    assert labs.course_root() == clone.resolve()
    assert cli.main(["labs", "generate", "--check"]) == 1
    err = capsys.readouterr().err
    assert f"solutions: {clone.resolve() / 'solutions'}" in err and "02_conv_arithmetic.ipynb" in err
    assert (ROOT / "labs" / "02_conv_arithmetic.ipynb").exists()   # the installed checkout is untouched
    assert cli.main(["labs", "generate"]) == 0 and (clone / "labs" / "02_conv_arithmetic.ipynb").exists()
    assert grade.find_lab("02").parent == clone.resolve() / "solutions"
    monkeypatch.chdir(tmp_path)                             # outside any course: the library's own
    assert labs.course_root() == ROOT


def test_roster_header_comments_and_a_missing_file(tmp_path, capsys):
    roster = tmp_path / "roster.csv"
    roster.write_text("Student,Email\n# dropped: carol\nalice,a@x.org\n\nbob,b@x.org\n")
    assert cli.read_roster(str(roster)) == ["alice", "bob"]
    roster.write_text("alice\nbob\n")
    assert cli.read_roster(str(roster)) == ["alice", "bob"]
    roster.write_text("alice\nalice\n")
    with pytest.raises(ValueError, match="more than once"):
        cli.read_roster(str(roster))
    code = cli.main(["grade", "01", str(tmp_path), "--out", str(tmp_path / "g.csv"), "--roster",
                     str(tmp_path / "nope.csv")])
    assert code == 2 and "roster file" in capsys.readouterr().err


def test_gradebook_inside_the_submissions_folder_and_students_who_left(tmp_path):
    subs = tmp_path / "subs"
    for s in ("ann", "ben", "cid"):
        (subs / s).mkdir(parents=True)                       # nothing to run: "missing" rows
    out = subs / "grades.csv"
    opts = grade.Options(timeout=60, jobs=1, progress=False)
    grade.grade(LAB, subs, out, opts, log=lambda m: None)
    again = grade.grade(LAB, subs, out, opts, log=lambda m: None)
    assert sorted(r.student for r in again) == ["ann", "ben", "cid"]     # not grades-feedback
    shutil.rmtree(subs / "ben")
    grade.grade(LAB, subs, out, opts, log=lambda m: None)
    assert sorted(p.name for p in (subs / "grades-feedback").iterdir()) == ["ann.html", "ann.txt", "cid.html", "cid.txt"]
    assert [r["student"] for r in csv.DictReader(out.open())] == ["ann", "cid"]


def test_a_batch_of_another_lab_is_warned_about(tmp_path):
    subs = tmp_path / "subs"
    (subs / "s").mkdir(parents=True)
    shutil.copy(ROOT / "solutions" / "02_conv_arithmetic.ipynb", subs / "s" / f"{LAB}.ipynb")
    said = []
    r = grade.grade(LAB, subs, tmp_path / "g.csv", grade.Options(jobs=1, progress=False), log=said.append)[0]
    assert r.status == "ok" and r.total == 0 and grade.NO_MATCH in r.reason
    assert any("WARNING: none of the 1 notebooks has an answer cell of 01_convolution" in m for m in said), said
    assert any(m.startswith("timeout: 60 s per submission (10 x the solution's own") for m in said), said


def test_default_timeout_follows_the_solution():
    key = grade.Key("x", "", {}, [], {}, Path("."), {}, {}, {}, 3.2)
    assert grade.default_timeout(key) == 60              # at least a minute
    key.seconds = 17.4
    assert grade.default_timeout(key) == 180             # 10 x, rounded up to 10 s
    key.seconds = 120
    assert grade.default_timeout(key) == 600             # at most ten minutes


def test_the_cvdl_command_does_not_import_torch():
    code = "import sys, cvdl, cvdl.grading.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_not_allowed_note_says_what_the_grader_checks():
    sol = labs.read_notebook(SOLUTION)
    labs.validate_solution(sol, "ok")
    for cell in sol["cells"]:
        if cell["cell_type"] == "markdown" and "`scipy.signal`" in labs.source(cell):
            dropped = labs.source(cell).replace(", `scipy.signal`", "", 1)
            gone = "\n".join(line for line in labs.source(cell).splitlines() if "Not allowed" not in line)
            break
    for text, phrase in ((dropped, "the grader checks"), (gone, "does not tell students")):
        broken = json.loads(json.dumps(sol))
        for cell in broken["cells"]:
            if cell["cell_type"] == "markdown" and "`scipy.signal`" in labs.source(cell):
                cell["source"] = text
                break
        with pytest.raises(ValueError, match=phrase):
            labs.validate_solution(broken, "broken")


def test_a_submodule_named_like_a_dangerous_module_is_not_that_module():
    """``scipy.signal`` is not the standard ``signal`` (nor ``numpy.random`` ``random``): using it
    where the part forbids it scores 0 for that part, and does not void the submission; the
    standard module reached through another (``os.sys``) still does."""
    sol = labs.read_notebook(SOLUTION)
    use = "import scipy.signal\ndef correlate2d(image, kernel):\n    return scipy.signal.correlate2d(image, kernel, 'valid')"
    why = labs.answer_violations(sol, {"correlate2d": use})["correlate2d"]
    assert "scipy.signal" in why and labs.VOIDS not in why, why
    assert labs.VOIDS in labs.answer_violations(sol, {"correlate2d": "import os\nx = os.sys.modules"})["correlate2d"]
    assert labs._is_submodule("scipy.signal") and not labs._is_submodule("os.sys")
    assert not labs._is_submodule("no_such_package.signal")
