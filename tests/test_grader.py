"""The grader against a zoo of hostile submissions, graded in one batch (``cvdl grade``).

Every submission is generated here from the lab's solution or its student version; each row of
the gradebook must have the expected status and points. Runs in bounded time: the infinite loop
is cut by the timeout while the others are graded in parallel.
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from cvdl.grading import cli, grade, labcheck, labs

ROOT = Path(__file__).resolve().parents[1]
LAB = "01_convolution"
SOLUTION = ROOT / "solutions" / f"{LAB}.ipynb"
STUDENT = ROOT / "labs" / f"{LAB}.ipynb"
HAVE_BWRAP = grade.sandbox_kind(grade.Options().sandbox) == "bwrap"  # CVDL_SANDBOX=none tests the fallback
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
    return zoo


# student → (status, points, a phrase the reason must contain)
EXPECTED = {
    "correct": ("ok", 10, "4 of 4 parts passed"),
    "partial": ("ok", 4, "2 of 4 parts passed"),
    "unsolved": ("ok", 0, "0 of 4 parts passed"),
    "infinite_loop": ("timed out", 0, "solution cell 'correlate2d'"),
    "os_exit": ("crashed", 2, "exited with status 3 while running solution cell 'conv2d'"),
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
    "uses_library": ("ok", 7, "solution cell 'conv2d' uses torch"),
    "missing": ("missing", 0, "no submission"),
    "not_on_time": ("missing", 0, "no submission"),   # on the roster, nothing handed in
}


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
    before = {p: p.read_bytes() for p in subs.rglob("*.ipynb")}
    opts = grade.Options(timeout=ZOO_TIMEOUT_S, memory_mb=2048, jobs=3, progress=False)
    t0 = time.perf_counter()
    results = grade.grade(LAB, subs, gradebook, opts, roster=["not_on_time"], log=lambda m: None)
    seconds = time.perf_counter() - t0
    return {"root": root, "subs": subs, "victim": victim, "gradebook": gradebook, "results": results,
            "seconds": seconds, "before": before, "opts": opts}


@pytest.mark.notebooks
def test_zoo_every_row_has_the_expected_status_and_points(zoo_run):
    rows = {r["student"]: r for r in csv.DictReader(zoo_run["gradebook"].open())}
    expected = {k: v for k, v in EXPECTED.items()
                if HAVE_BWRAP or k not in ("read_solutions", "write_outside")}
    assert set(rows) == set(expected), f"gradebook rows {sorted(rows)}"
    wrong = []
    for student, (status, points, phrase) in expected.items():
        row = rows[student]
        if row["status"] != status or float(row["total"]) != points or phrase not in row["reason"]:
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
    assert all(r.resumed for r in again if r.status != "missing")
    assert {r.student: r.total for r in again} == {r.student: r.total for r in zoo_run["results"]}


@pytest.mark.notebooks
def test_cli_regrades_only_what_changed(zoo_run, capsys):
    (zoo_run["subs"] / "invalid_json" / f"{LAB}.ipynb").write_bytes(b"still not json")
    code = cli.main(["grade", "01", str(zoo_run["subs"]), "--out", str(zoo_run["gradebook"]), "--quiet",
                     "--timeout", str(ZOO_TIMEOUT_S)])
    out = capsys.readouterr()
    n = sum(1 for d in zoo_run["subs"].iterdir())             # no roster this time
    done = sum(1 for d in zoo_run["subs"].iterdir() if d.name not in ("invalid_json", "missing"))
    assert code == 0 and f"graded {n} submission(s)" in out.out, out
    assert f"resuming: {done} already graded, 2 to grade" in out.err, out.err
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
    assert results["solution"].status == "ok" and results["solution"].total == results["solution"].max_total
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
    """A change to any module of cvdl/grading (or to cvdl/_io.py, which they use) builds a new key."""
    import pathlib

    base = grade._machinery_digest()
    folder = pathlib.Path(grade.__file__).parent
    files = sorted(folder.glob("*.py")) + [folder.parent / "_io.py"]
    assert {f.name for f in files} >= {"__init__.py", "cli.py", "grade.py", "labcheck.py", "labrun.py", "labs.py"}
    original = pathlib.Path.read_bytes
    for changed in files:
        monkeypatch.setattr(pathlib.Path, "read_bytes",
                            lambda self, _c=changed: original(self) + (b"\n# edited" if self == _c else b""))
        assert grade._machinery_digest() != base, f"editing {changed.name} would not build a new grading key"
    monkeypatch.setattr(pathlib.Path, "read_bytes", original)
    assert grade._machinery_digest() == base
