"""Grade a folder of lab submissions: ``cvdl grade 01 submissions/ --out grades.csv``.

How a submission is graded (see ``docs/grading.md`` for the threat model):

1. **Key** (once per lab, cached): the instructor's solution notebook runs with its test cells in
   *record* mode; every ``check(...)`` stores its inputs and the reference outputs
   (:mod:`cvdl.grading.labcheck`). The solution must pass its own checks, or grading stops.
2. **Splice**: only the *contents of the solution cells* (matched by nbgrader ``grade_id``) are
   taken from the submission and put into a fresh copy of the instructor's notebook. Edited or
   deleted test cells, changed points, other kernels and stored outputs are ignored.
3. **Run** (:mod:`cvdl.grading.labrun`) in a sandbox: bubblewrap when the machine has it (no network,
   read-only system and Python, nothing of the instructor's files but the library, a private
   writable folder, its own PID namespace), with memory/file-size limits and a wall-clock
   timeout that kills the whole sandbox. Test cells are replaced by a harness that calls the
   student's functions on the key's inputs and writes the raw outputs as ``.npy`` / JSON.
4. **Verdict**, outside the sandbox: the outputs are read back (no pickle, no symlinks, sizes
   capped) and compared with the key by :func:`cvdl.grading.labcheck.compare`. Nothing the submission
   does inside its process can change this step.

Every submission gets a row with a status — ``ok``, ``crashed``, ``timed out``,
``invalid notebook``, ``missing`` — and a reason; records are written atomically as each
submission finishes, and a re-run skips submissions already graded (``--regrade`` redoes them).
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_write_text
from . import labcheck, labs

STATUSES = ("ok", "crashed", "timed out", "invalid notebook", "missing")
MAX_NOTEBOOK_MB = 50
MAX_RESULT_MB = 64
_LIB_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the cvdl package
_GRADING = Path(__file__).resolve().parent      # cvdl/grading


@dataclass
class Options:
    timeout: float = 300.0       # wall-clock seconds per submission, kernel start included
    memory_mb: int = 2048        # heap / anonymous memory (RLIMIT_DATA) per submission
    jobs: int = max(1, (os.cpu_count() or 2))
    regrade: bool = False
    sandbox: str = field(default_factory=lambda: os.environ.get("CVDL_SANDBOX", "auto"))  # auto|bwrap|none
    progress: bool = True


@dataclass
class Result:
    student: str
    status: str
    reason: str
    points: dict = field(default_factory=dict)
    total: float = 0.0
    max_total: float = 0.0
    seconds: float = 0.0          # wall time of the whole grading of this submission
    exec_seconds: float = 0.0     # time spent inside notebook cells
    sha256: str = ""
    key: str = ""
    sandbox: str = ""
    feedback: str = ""
    resumed: bool = False


# ----------------------------------------------------------------------------------------------
# Sandbox
# ----------------------------------------------------------------------------------------------


def sandbox_kind(requested: str = "auto") -> str:
    """``bwrap`` when bubblewrap is installed and works here, else ``none`` (unless required)."""
    if requested not in ("auto", "bwrap", "none"):
        raise ValueError(f"sandbox must be 'auto', 'bwrap' or 'none', got {requested!r}")
    if requested == "none":
        return "none"
    ok = _bwrap_works()
    if requested == "bwrap" and not ok:
        raise RuntimeError("--sandbox bwrap was asked for, but bubblewrap is missing or cannot create "
                           "namespaces here (Debian/Ubuntu: apt-get install bubblewrap)")
    return "bwrap" if ok else "none"


_BWRAP_OK: bool | None = None


def _bwrap_works() -> bool:
    global _BWRAP_OK
    if _BWRAP_OK is None:
        exe = shutil.which("bwrap")
        _BWRAP_OK = False
        if exe:
            try:
                r = subprocess.run(_bwrap_prefix(None, None) + ["/bin/true"], capture_output=True, timeout=20)
                _BWRAP_OK = r.returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                _BWRAP_OK = False
    return _BWRAP_OK


def _bwrap_prefix(job_dir: Path | None, inputs: Path | None) -> list[str]:
    cmd = ["bwrap", "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
           "--disable-userns", "--cap-drop", "ALL", "--die-with-parent", "--new-session",
           "--ro-bind", "/usr", "/usr"]
    for d in ("bin", "lib", "lib64", "sbin", "lib32", "libx32"):
        p = Path("/") / d
        if p.is_symlink():
            cmd += ["--symlink", os.readlink(p), f"/{d}"]
        elif p.is_dir():
            cmd += ["--ro-bind", str(p), f"/{d}"]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group",
              "/etc/nsswitch.conf", "/etc/localtime", "/etc/alternatives"):
        cmd += ["--ro-bind-try", f, f]
    # /tmp first: the interpreter, the venv or the course may themselves live under /tmp (a CI
    # clone), and a tmpfs mounted after their binds would hide them
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(64 << 20), "--tmpfs", "/tmp"]
    roots = []
    for p in (sys.base_prefix, sys.prefix, str(_LIB_ROOT)):
        p = os.path.realpath(p)
        if not any(p == r or p.startswith(r + os.sep) for r in roots) and not p.startswith("/usr/"):
            roots.append(p)
    for p in roots:
        cmd += ["--ro-bind", p, p]
    if job_dir is not None:
        cmd += ["--bind", str(job_dir), "/job"]
    if inputs is not None:
        cmd += ["--ro-bind", str(inputs), "/job/inputs"]
    cmd += ["--chdir", "/job/work" if job_dir is not None else "/", "--clearenv"]
    for k, v in _sandbox_env("/job").items():
        cmd += ["--setenv", k, v]
    return cmd


def _sandbox_env(job: str) -> dict:
    return {"PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin", "HOME": f"{job}/home",
            "USER": "student", "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": f"{job}/home/.mpl", "CVDL_CACHE": f"{job}/home/.cache/cvdl",
            "TORCH_HOME": f"{job}/home/.torch", "IPYTHONDIR": f"{job}/home/.ipython",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "CVDL_SMOKE": "1", "CI": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
            "PYTHONHASHSEED": "0"}


def _run(job_dir: Path, inputs: Path | None, sandbox: str, timeout: float) -> tuple[int, bool, float]:
    """Run the runner on ``job_dir``; returns (exit status, timed out, seconds)."""
    for d in ("work", "home", "out/results", "inputs"):
        (job_dir / d).mkdir(parents=True, exist_ok=True)
    # run labrun.py as a script, not ``-m cvdl.grading.labrun``: importing the package would import torch
    # before the first cell and bill the notebook's imports to the grader
    py = [sys.executable, str(_GRADING / "labrun.py")]
    if sandbox == "bwrap":
        cmd, env, cwd = _bwrap_prefix(job_dir, inputs) + py + ["/job"], None, None
    else:
        cmd = py + [str(job_dir)]
        env = _sandbox_env(str(job_dir))
        env["PYTHONPATH"] = str(_LIB_ROOT)
        cwd = str(job_dir / "work")
    t0 = time.perf_counter()
    with open(job_dir / "stdio.txt", "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            rc = -9
        finally:
            try:  # the whole process group: the sandbox, or the runner and anything it started
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
    return rc, timed_out, time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# Reading what came out of the sandbox: untrusted files
# ----------------------------------------------------------------------------------------------


def _read_untrusted(path: Path, cap: int) -> bytes | None:
    """A regular file's bytes (at most ``cap``), never following a symlink; None if absent/odd."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size > cap:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(cap + 1)[:cap]
    finally:
        os.close(fd)


def _read_array(path: str) -> np.ndarray:
    data = _read_untrusted(Path(path), MAX_RESULT_MB << 20)
    if data is None:
        raise ValueError(f"missing or unreadable result file {os.path.basename(path)}")
    return np.load(io.BytesIO(data), allow_pickle=False)


def _progress_events(out: Path) -> list[dict]:
    data = _read_untrusted(out / "progress.jsonl", 8 << 20) or b""
    events = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict):
            events.append(e)
    return events


# ----------------------------------------------------------------------------------------------
# The key: the solution run in record mode
# ----------------------------------------------------------------------------------------------


@dataclass
class Key:
    lab: str
    sha: str
    solution: dict
    parts: list          # [(grade_id, points)]
    checks: dict         # grade_id -> [check entries, with "want" decoded]
    inputs: Path         # folder of the input arrays (mounted read-only into sandboxes)
    sandbox_checks: dict  # grade_id -> [check entries without "want"]
    hidden: dict         # grade_id -> hidden case count
    part_of: dict        # solution grade_id -> the test part that follows it


def _sha(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def _files_in(tree) -> list[str]:
    if isinstance(tree, list) and tree and tree[0] in ("ndarray", "tensor"):
        return [tree[1]]
    if isinstance(tree, list) and tree and tree[0] in ("list", "tuple"):
        return [f for t in tree[1] for f in _files_in(t)]
    if isinstance(tree, list) and tree and tree[0] == "dict":
        return [f for t in tree[1].values() for f in _files_in(t)]
    return []


def _machinery_digest() -> str:
    """A digest of every module the grading key depends on: all of ``cvdl/grading`` and the
    library modules they import (``cvdl/_io.py``). Any change to them builds a new key."""
    files = sorted(_GRADING.glob("*.py")) + [_GRADING.parent / "_io.py"]
    return _sha(*(f.name.encode() + b"\0" + f.read_bytes() for f in files))


def build_key(solution_path: Path, state: Path, timeout: float = 600.0) -> Key:
    """Run the solution in record mode (cached in ``state`` by content hash)."""
    raw = solution_path.read_bytes()
    sha = _sha(raw, _machinery_digest().encode())[:16]
    solution = json.loads(raw)
    labs.validate_solution(solution, solution_path.name)
    folder = state / f"key-{sha}"
    if not (folder / "key" / "checks.json").exists():
        tmp = Path(tempfile.mkdtemp(prefix=".key-", dir=state))
        answers = {labs.meta(c)["grade_id"]: labs.source(c) for c in solution["cells"]
                   if labs.role(c) == "solution" and c.get("cell_type") == "code"}
        cells, _ = labs.splice(solution, answers)
        (tmp / "job.json").write_text(json.dumps({"mode": "record", "cells": cells, "memory_mb": 0}))
        rc, timed_out, _ = _run(tmp, None, "none", timeout)
        events = _progress_events(tmp / "out")
        errors = [e for e in events if e.get("event") == "error"]
        if timed_out or rc != 0 or errors or not any(e.get("event") == "done" for e in events):
            detail = errors[0].get("tb", "") if errors else (tmp / "stdio.txt").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the solution {solution_path} did not run cleanly in record mode "
                               f"(exit {rc}, timed out: {timed_out}):\n{detail}")
        inputs = tmp / "inputs-ro"
        inputs.mkdir()
        for entry in json.loads((tmp / "out" / "key" / "checks.json").read_text()):
            for case in entry["cases"]:
                for tree in case["args"] + list(case["kwargs"].values()):
                    for name in _files_in(tree):
                        shutil.copy(tmp / "out" / "key" / name, inputs / name)
        shutil.move(str(tmp / "out" / "key"), tmp / "key")
        shutil.rmtree(folder, ignore_errors=True)
        for junk in ("out", "work", "home", "inputs", "job.json", "stdio.txt"):
            p = tmp / junk
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        os.replace(tmp, folder)
    entries = json.loads((folder / "key" / "checks.json").read_text())
    checks: dict = {}
    sandbox_checks: dict = {}
    hidden: dict = {}
    for entry in entries:
        part = entry["part"]
        for case in entry["cases"]:
            case["want_node"] = labcheck.load(case["want"], str(folder / "key"))
        checks.setdefault(part, []).append(entry)
        hidden[part] = hidden.get(part, 0) + (len(entry["cases"]) if entry["hidden"] else 0)
        sandbox_checks.setdefault(part, []).append(
            {"fn": entry["fn"], "probe": entry["probe"],
             "cases": [{"args": c["args"], "kwargs": c["kwargs"]} for c in entry["cases"]]})
    parts = labs.parts(solution)
    missing = [gid for gid, _ in parts if gid not in checks]
    if missing:
        raise RuntimeError(f"{solution_path.name}: test cells {missing} declare no check(...)")
    part_of, waiting = {}, []
    for cell in solution["cells"]:
        if labs.role(cell) == "solution":
            waiting.append(labs.meta(cell)["grade_id"])
        elif labs.role(cell) == "test":
            part_of.update({gid: labs.meta(cell)["grade_id"] for gid in waiting})
            waiting = []
    return Key(solution_path.stem, sha, solution, parts, checks, folder / "inputs-ro",
               sandbox_checks, hidden, part_of)


# ----------------------------------------------------------------------------------------------
# One submission
# ----------------------------------------------------------------------------------------------


def _signal_name(rc: int) -> str:
    sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0
    try:
        name = signal.Signals(sig).name if sig else ""
    except ValueError:
        name = f"signal {sig}"
    return {"SIGSEGV": "SIGSEGV (segmentation fault)", "SIGKILL": "SIGKILL (killed)",
            "SIGABRT": "SIGABRT (abort)"}.get(name, name)


def _cell_label(cells: list[dict], i) -> str:
    if not isinstance(i, int) or not 0 <= i < len(cells):
        return "an unknown cell"
    c = cells[i]
    if c["kind"] == "test":
        return f"the tests of {c['part']!r}"
    return f"solution cell {c['part']!r}" if c.get("part") else f"cell {i + 1} (given code)"


def _verdict(key: Key, out: Path) -> tuple[dict, list[str], bool]:
    """Points per part, feedback lines and whether a memory error was seen."""
    points, lines, memory = {}, [], False
    for gid, pts in key.parts:
        data = _read_untrusted(out / "results" / f"{gid}.json", 16 << 20)
        got_list = None
        if data is not None:
            try:
                got_list = json.loads(data)
                if not isinstance(got_list, list):
                    got_list = None
            except ValueError:
                got_list = None
        n_cases = sum(len(c["cases"]) for c in key.checks[gid])
        if got_list is None or len(got_list) != n_cases:
            points[gid] = 0.0
            lines.append(f"{gid}: 0/{pts:g} — not graded: the tests of this part did not run to the end")
            continue
        k, vis_fail, hid_total, hid_pass = 0, [], 0, 0
        for cn, chk in enumerate(key.checks[gid]):
            for ci, case in enumerate(chk["cases"]):
                try:
                    got = labcheck.load(got_list[k], str(out / "results"), _read_array)
                    reason = labcheck.compare(got, case["want_node"], chk["atol"], chk["rtol"])
                    if got[0] == "error" and ("MemoryError" in got[1] or "can't allocate memory" in got[2]):
                        memory = True
                except Exception as exc:  # noqa: BLE001 - a malformed result is a failed case
                    reason = f"result could not be read ({type(exc).__name__})"
                    got = None
                k += 1
                if chk["hidden"]:
                    hid_total += 1
                    hid_pass += reason is None
                elif reason:
                    vis_fail.append(f"{chk['fn']}, check {cn + 1}, case {ci + 1}: {reason}")
        passed = not vis_fail and hid_pass == hid_total
        points[gid] = pts if passed else 0.0
        msg = f"{gid}: {points[gid]:g}/{pts:g}"
        if passed:
            msg += " — all checks passed"
        else:
            if vis_fail:
                msg += "\n    visible checks failed:\n      " + "\n      ".join(f[:400] for f in vis_fail[:5])
            if hid_total:
                msg += f"\n    hidden checks: {hid_pass} of {hid_total} passed"
        lines.append(msg)
    return points, lines, memory


def grade_submission(student: str, path: Path | None, key: Key, state: Path, opts: Options,
                     sandbox: str) -> Result:
    t0 = time.perf_counter()
    max_total = sum(p for _, p in key.parts)
    zero = {gid: 0.0 for gid, _ in key.parts}
    res = Result(student, "missing", "", dict(zero), 0.0, max_total, key=key.sha, sandbox=sandbox)
    if path is None:
        res.reason = "no submission found"
        return _done(res, t0)
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_MB << 20:
            res.status, res.reason = "invalid notebook", f"file is {size >> 20} MB, over the {MAX_NOTEBOOK_MB} MB limit"
            return _done(res, t0)
        raw = path.read_bytes()
    except OSError as exc:
        res.status, res.reason = "invalid notebook", f"cannot read the file: {exc.strerror}"
        return _done(res, t0)
    res.sha256 = _sha(raw)
    try:
        nb = json.loads(raw.decode("utf-8"))
        answers, notes = labs.submission_answers(nb)
    except (ValueError, UnicodeDecodeError) as exc:
        res.status = "invalid notebook"
        res.reason = f"not a readable notebook: {str(exc)[:200]}"
        return _done(res, t0)
    ks = (nb.get("metadata") or {}).get("kernelspec") if isinstance(nb.get("metadata"), dict) else None
    want_kernel = key.solution.get("metadata", {}).get("kernelspec", {}).get("name")
    if isinstance(ks, dict) and ks.get("name") not in (want_kernel, "python3", None):
        notes.append(f"the notebook asks for kernel {str(ks.get('name'))[:40]!r}; "
                     "it was ignored and the course's Python was used")
    if not answers:
        notes.append("no solution cells found (cells keep nbgrader metadata: work in the lab file itself)")
    cells, more = labs.splice(key.solution, answers)
    notes += more
    banned = {}  # test part -> reason, for answers that use what their part forbids
    for gid, names in labs.forbidden(key.solution).items():
        hits = labs.forbidden_uses(answers.get(gid, ""), names)
        if hits:
            banned[key.part_of[gid]] = f"solution cell {gid!r} uses {', '.join(hits[:3])}, which this part does not allow"
    job = Path(tempfile.mkdtemp(prefix="cvdl-grade-"))
    try:
        job_json = {"mode": "harness", "cells": cells, "checks": key.sandbox_checks,
                    "memory_mb": opts.memory_mb}
        (job / "job.json").write_text(json.dumps(job_json))
        if sandbox == "none":  # no mount: the runner reads the inputs from a private copy
            shutil.copytree(key.inputs, job / "inputs")
        rc, timed_out, _ = _run(job, key.inputs if sandbox == "bwrap" else None, sandbox, opts.timeout)
        out = job / "out"
        events = _progress_events(out)
        res.exec_seconds = round(sum(float(e.get("seconds", 0)) for e in events
                                     if isinstance(e.get("seconds", 0), (int, float))), 3)
        points, lines, memory = _verdict(key, out)
        for part, why in banned.items():
            points[part] = 0.0
            notes.append(why)
            lines = [f"{part}: 0/{dict(key.parts)[part]:g} — {why}" if ln.startswith(f"{part}:") else ln
                     for ln in lines]
        started = [e.get("cell") for e in events if e.get("event") == "start"]
        last = _cell_label(cells, started[-1]) if started else "start-up"
        errors = [e for e in events if e.get("event") == "error"]
        memory = memory or any(e.get("etype") == "MemoryError" or "can't allocate memory" in str(e.get("msg"))
                               for e in errors)
        done = any(e.get("event") == "done" for e in events)
        if timed_out:
            res.status, res.reason = "timed out", f"stopped after {opts.timeout:g} s while running {last}"
        elif rc != 0 or not done:
            how = f"was killed by {_signal_name(rc)}" if (rc < 0 or rc > 128) else f"exited with status {rc}"
            res.status, res.reason = "crashed", f"the Python process {how} while running {last}"
        elif memory:
            res.status, res.reason = "crashed", f"exceeded the memory limit ({opts.memory_mb} MB)"
        else:
            res.status = "ok"
        if memory and res.status == "crashed" and "memory" not in res.reason:
            res.reason += f" (the memory limit of {opts.memory_mb} MB was exceeded)"
        res.points = points
        res.total = float(sum(points.values()))
        n_ok = sum(1 for gid, p in key.parts if points[gid] == p)
        summary = f"{n_ok} of {len(key.parts)} parts passed"
        res.reason = f"{res.reason}; {summary}" if res.reason else summary
        err_lines = []
        for e in errors[:8]:
            where = _cell_label(cells, e.get("cell"))
            err_lines.append(f"  {where}: {str(e.get('etype'))[:60]}: {str(e.get('msg')).splitlines()[0][:160] if e.get('msg') else ''}")
        if errors:
            res.reason += f"; errors in {len(errors)} cell(s), first in {_cell_label(cells, errors[0].get('cell'))}"
        if notes:
            res.reason += "; " + "; ".join(notes[:3])
        res.feedback = "\n".join(
            [f"status: {res.status}", f"score: {res.total:g} / {max_total:g}", ""] + lines +
            ([""] + ["errors while running your notebook:"] + err_lines if err_lines else []) +
            ([""] + ["notes:"] + [f"  {n}" for n in notes] if notes else []))
    finally:
        shutil.rmtree(job, ignore_errors=True)
    return _done(res, t0)


def _done(res: Result, t0: float) -> Result:
    res.seconds = round(time.perf_counter() - t0, 3)
    res.total = float(sum(res.points.values()))
    if not res.feedback:
        res.feedback = f"status: {res.status}\nscore: {res.total:g} / {res.max_total:g}\n{res.reason}"
    return res


# ----------------------------------------------------------------------------------------------
# A batch
# ----------------------------------------------------------------------------------------------


def find_lab(lab: str, solutions: Path | None = None) -> Path:
    """``01``, ``01_convolution``, ``01_convolution.ipynb`` or a path → the solution notebook."""
    p = Path(lab)
    if p.suffix == ".ipynb" and p.exists():
        return p
    root = solutions or labs.solutions_dir()
    hits = sorted(q for q in root.glob("*.ipynb") if q.stem == lab or q.stem.startswith(f"{lab}_")
                  or q.name == lab)
    if len(hits) != 1:
        known = ", ".join(q.stem for q in sorted(root.glob("*.ipynb")))
        raise ValueError(f"lab {lab!r} matches {len(hits)} solution notebooks in {root}; known: {known}")
    return hits[0]


def find_submissions(folder: Path, lab_name: str, roster: list[str] | None = None) -> list[tuple[str, Path | None]]:
    """``folder/STUDENT/LAB.ipynb`` (also nbgrader's ``STUDENT/LAB/LAB.ipynb``, or a single
    notebook in ``STUDENT/``), or ``folder/STUDENT.ipynb``. Students in ``roster`` without a
    submission, and student folders without a notebook, are listed with ``None``."""
    found: dict[str, Path | None] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            cands = [entry / f"{lab_name}.ipynb", entry / lab_name / f"{lab_name}.ipynb"]
            hit = next((c for c in cands if c.is_file()), None)
            if hit is None:
                nbs = [q for q in entry.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts]
                hit = nbs[0] if len(nbs) == 1 else None
            found[entry.name] = hit
        elif entry.suffix == ".ipynb":
            found[entry.stem] = entry
    for name in roster or []:
        found.setdefault(name, None)
    return sorted(found.items())


def write_gradebook(path: Path, results: list[Result], parts: list) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["student", "status"] + [gid for gid, _ in parts] + ["total", "max", "reason"])
    for r in sorted(results, key=lambda r: r.student):
        w.writerow([r.student, r.status] + [f"{r.points.get(gid, 0):g}" for gid, _ in parts] +
                   [f"{r.total:g}", f"{r.max_total:g}", r.reason])
    atomic_write_text(path, buf.getvalue())


def _safe_name(student: str) -> str:
    """A file name for a student; names that had to change get a hash so two cannot collide."""
    s = "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in student).lstrip(".")[:100]
    return s if s == student else f"{s}-{_sha(student.encode())[:8]}"


def grade(lab: str, submissions: str | os.PathLike, out: str | os.PathLike, opts: Options | None = None,
          feedback: str | os.PathLike | None = None, roster: list[str] | None = None,
          log=print) -> list[Result]:
    """Grade every submission of ``lab`` in ``submissions``; write the gradebook ``out`` (CSV),
    one feedback file per student, and resumable records. Returns the results."""
    opts = opts or Options()
    out = Path(out).resolve()
    sol = find_lab(lab)
    subs_dir = Path(submissions).resolve()
    if not subs_dir.is_dir():
        raise ValueError(f"submissions folder {subs_dir} does not exist")
    feedback = Path(feedback).resolve() if feedback else out.with_name(f"{out.stem}-feedback")
    state = out.with_name(f".{out.stem}.cvdl")
    for d in (state / "records", feedback):
        d.mkdir(parents=True, exist_ok=True)
    sandbox = sandbox_kind(opts.sandbox)
    if sandbox == "none":
        log("WARNING: bubblewrap (bwrap) is not available; grading in the weaker fallback mode: each "
            "submission runs in its own process and folder with memory and time limits, but it can "
            "read files this user can read (including the solutions) and use the network. Install "
            "bubblewrap (apt-get install bubblewrap) for real isolation.")
    else:
        log("sandbox: bubblewrap (no network, read-only system, private folder, own PID namespace)")
    key = build_key(sol, state, timeout=max(opts.timeout, 600))
    todo = find_submissions(subs_dir, sol.stem, roster)
    results: dict[str, Result] = {}
    pending = []
    for student, path in todo:
        rec = state / "records" / f"{_safe_name(student)}.json"
        if not opts.regrade and rec.exists() and path is not None:
            try:
                old = Result(**json.loads(rec.read_text()))
                if old.key == key.sha and old.sha256 == _sha(path.read_bytes()):
                    old.resumed = True
                    results[student] = old
                    continue
            except (ValueError, TypeError, OSError):
                pass
        pending.append((student, path))
    if len(results):
        log(f"resuming: {len(results)} already graded, {len(pending)} to grade (--regrade to redo all)")
    lock = threading.Lock()

    def finish(r: Result) -> None:
        with lock:
            results[r.student] = r
            name = _safe_name(r.student)
            atomic_write_text(feedback / f"{name}.txt", r.feedback + "\n")
            atomic_write_text(state / "records" / f"{name}.json", json.dumps(asdict(r)))
            write_gradebook(out, list(results.values()), key.parts)

    def one(student, path) -> Result:
        try:
            return grade_submission(student, path, key, state, opts, sandbox)
        except Exception as exc:  # noqa: BLE001 - one bad submission never stops the batch
            return Result(student, "crashed", f"internal grader error ({type(exc).__name__}: {exc})",
                          {gid: 0.0 for gid, _ in key.parts}, 0.0, sum(p for _, p in key.parts),
                          key=key.sha, sandbox=sandbox)

    bar = None
    if opts.progress and pending:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(pending), desc=f"grading {sol.stem}", unit="nb")
    with cf.ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        futures = [pool.submit(one, s, p) for s, p in pending]
        for fut in cf.as_completed(futures):
            finish(fut.result())
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    write_gradebook(out, list(results.values()), key.parts)
    return [results[s] for s, _ in todo]
