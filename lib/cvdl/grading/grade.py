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
import ctypes
import fcntl
import hashlib
import io
import json
import math
import os
import re
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
from . import gradebook, labcheck, labs, limits as sandbox_limits

STATUSES = ("ok", "crashed", "timed out", "invalid notebook", "missing")
MAX_NOTEBOOK_MB = 50
MAX_RESULT_MB = 64            # one result array
MAX_RESULTS_READ_MB = 256     # all result arrays of one submission, read by the verdict
MAX_JSON_DEPTH = 64           # nesting of a result tree (a notebook's JSON: see _parse_json)
NO_MATCH = "none of this lab's answer cells is in the notebook"
MAX_REASON = 1000             # characters of the gradebook's reason column
TIMEOUT_FACTOR, TIMEOUT_MIN_S, TIMEOUT_MAX_S = 10, 60, 600
SHM_MB = 64                   # the sandbox's /dev/shm and /tmp (tmpfs, in memory)
SANDBOX_GRADING = ("__init__.py", "labcheck.py", "labrun.py")  # all of cvdl/grading a sandbox sees
_LIB_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the cvdl package
_GRADING = Path(__file__).resolve().parent      # cvdl/grading


@dataclass
class Options:
    timeout: float | None = None  # wall-clock seconds per submission, start-up included; None: from the
                                  # solution's own run (TIMEOUT_FACTOR x, at least TIMEOUT_MIN_S)
    memory_mb: int = 2048        # heap / anonymous memory (RLIMIT_DATA) per submission
    jobs: int = max(1, (os.cpu_count() or 2))
    regrade: bool = False
    sandbox: str = field(default_factory=lambda: os.environ.get("CVDL_SANDBOX", "auto"))  # auto|bwrap|none
    limits: str = field(default_factory=lambda: os.environ.get("CVDL_LIMITS", "auto"))    # auto|cgroup|watchdog
    progress: bool = True
    students: tuple = ()         # grade (again) only these students; the others keep their records


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
    limits: str = ""              # the limits in force (the gradebook's last column)
    peak_mb: float = 0.0          # the sandbox's peak memory (cgroup: all of it; watchdog: sampled PSS)
    stopped: str = ""             # why the run stopped early (crashed, timed out), for the feedback
    details: list = field(default_factory=list)   # per autograded part: see _verdict
    errors: list = field(default_factory=list)    # "where: type: first line" of errors raised in cells
    notes: list = field(default_factory=list)     # notes on the submission itself
    written: dict = field(default_factory=dict)   # hand-graded part -> the student's written answer
    submitted: str = ""           # ISO time the submission was made (see gradebook.file_time)
    time_source: str = ""         # where that time comes from


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


def _bwrap_prefix(job_dir: Path | None, inputs: Path | None, grading: Path | None = None) -> list[str]:
    """The bubblewrap command line; ``grading``: the folder mounted over ``cvdl/grading`` (only
    :data:`SANDBOX_GRADING`: no references, no grader, no lab tools)."""
    cmd = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
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
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_MB << 20), "--tmpfs", "/dev/shm",
            "--size", str(SHM_MB << 20), "--tmpfs", "/tmp"]
    # each installation folder at its real path and, when it is reached through a symlink (a venv
    # behind a linked folder), at the path the interpreter is run by as well
    binds: list[tuple[str, str]] = []
    for p in (sys.base_prefix, sys.prefix, os.path.dirname(sys.executable), str(_LIB_ROOT)):
        given, real = os.path.abspath(p), os.path.realpath(p)
        for target in (real, given):
            if target.startswith("/usr/") or any(target == t or target.startswith(t + os.sep) for _, t in binds):
                continue
            binds.append((real, target))
    for real, target in sorted(binds, key=lambda b: b[1].count(os.sep)):
        cmd += ["--ro-bind", real, target]
    if grading is not None:
        cmd += ["--ro-bind", str(grading), str(_GRADING)]
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


@dataclass
class Run:
    rc: int
    timed_out: bool
    seconds: float
    token: str            # what the runner must write into its "done" event
    limit: str = ""       # a whole-sandbox limit that stopped it ('' if none)
    peak_mb: float = 0.0  # the sandbox's peak memory, where the limiter measures it


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
    _PRCTL = _LIBC.prctl
except (OSError, AttributeError):
    _PRCTL = None
_PR_SET_PDEATHSIG = 1


def _run(job_dir: Path, inputs: Path | None, sandbox: str, timeout: float,
         limiter: "sandbox_limits.Limiter | None" = None, grading: Path | None = None) -> Run:
    """Run the runner on ``job_dir`` under the whole-sandbox ``limiter``."""
    for d in ("work", "home", "out/results", "inputs"):
        (job_dir / d).mkdir(parents=True, exist_ok=True)
    # run labrun.py as a script, not ``-m cvdl.grading.labrun``: importing the package would import torch
    # before the first cell and bill the notebook's imports to the grader
    py = [sys.executable, str(_GRADING / "labrun.py")]
    if sandbox == "bwrap":   # bwrap itself gets the minimal environment too: /proc/1/environ is its
        cmd = _bwrap_prefix(job_dir, inputs, grading) + py + ["/job"]
        env, cwd = _sandbox_env("/job"), None
    else:
        cmd = py + [str(job_dir)]
        env = _sandbox_env(str(job_dir))
        env["PYTHONPATH"] = str(_LIB_ROOT)
        cwd = str(job_dir / "work")
    token = os.urandom(16).hex()   # on the runner's stdin, read before any cell: not in a file
    job = limiter.start(f"cvdl-{os.getpid()}-{job_dir.name}") if limiter else None
    join = limiter.preexec(job) if limiter else None

    # the sandbox dies with the grader: bubblewrap at once (its PID namespace takes every process
    # along); the fallback's runner gets SIGTERM and kills its process group (labrun.py)
    death = int(signal.SIGKILL if sandbox == "bwrap" else signal.SIGTERM)

    def preexec():
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, death, 0, 0, 0)
        if join is not None:
            join()

    t0 = time.perf_counter()
    limit = ""
    timed_out = False
    try:
        with open(job_dir / "stdio.txt", "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=cwd, start_new_session=True, preexec_fn=preexec)
            try:
                try:
                    proc.stdin.write(token.encode() + b"\n")
                    proc.stdin.close()
                except OSError:
                    pass
                deadline = t0 + timeout
                while True:
                    try:
                        rc = proc.wait(timeout=sandbox_limits.POLL_S)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if time.perf_counter() > deadline:
                        timed_out, rc = True, -9
                        break
                    if limiter is not None and limiter.poll(job, proc.pid):
                        rc = -9
                        break
            finally:
                try:  # the whole process group: the sandbox, or the runner and anything it started
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
    finally:
        if limiter is not None:
            limit = limiter.finish(job)
    return Run(rc, timed_out, time.perf_counter() - t0, token, limit, round(job.peak_mb, 1) if job else 0.0)


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


class _ArrayReader:
    """The verdict's only way to read result arrays: each file read once (a tree naming one file
    10 000 times costs one read) and all of them together at most ``budget`` bytes."""

    def __init__(self, budget: int = MAX_RESULTS_READ_MB << 20):
        self.budget, self.cache = budget, {}
        self.digests: dict[str, str] | None = None   # file name -> sha256 the harness signed

    def __call__(self, path: str) -> np.ndarray:
        if self.digests is not None and os.path.basename(path) not in self.digests:
            raise Tampered(f"result file {os.path.basename(path)} is not one its tests wrote")
        if path not in self.cache:
            try:
                size = os.lstat(path).st_size
            except OSError:
                size = 0
            if size > self.budget:
                raise ValueError("the result arrays are larger than the grader reads")
            self.budget -= size
            data = _read_untrusted(Path(path), MAX_RESULT_MB << 20)
            if data is None:
                raise ValueError(f"missing or unreadable result file {os.path.basename(path)}")
            if self.digests is not None and self.digests.get(os.path.basename(path)) != hashlib.sha256(data).hexdigest():
                raise Tampered(f"result file {os.path.basename(path)} was changed after its tests ran")
            self.cache[path] = np.load(io.BytesIO(data), allow_pickle=False)
        return self.cache[path]


class Tampered(ValueError):
    """A part's results were not the harness's own (changed after the part's tests ran)."""


def _parse_json(data: bytes | str):
    """``json.loads`` that turns absurd nesting into a ValueError (the reader is recursive)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _progress_events(out: Path) -> list[dict]:
    data = _read_untrusted(out / "progress.jsonl", 8 << 20) or b""
    events = []
    for line in data.decode("utf-8", "replace").splitlines()[:100_000]:
        try:
            e = _parse_json(line)
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
    seconds: float = 0.0  # the solution's own run (record mode), start-up included
    title: str = ""       # the lab's title (its first heading)
    all_parts: list = field(default_factory=list)  # [(grade_id, points, "auto" | "manual")], notebook order


def _sha(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def _machinery_digest() -> str:
    """A digest of every module the grading key and the automatic grades depend on (the
    grader, the runner, the checks, the lab rules and references, ``cvdl/_io.py``). Any change to
    them builds a new key and grades again; the gradebook, report and nbgrader modules only
    present grades, and do not."""
    files = [_GRADING / f"{m}.py" for m in ("__init__", "_refs", "grade", "labcheck", "labrun", "labs", "limits")]
    files += [_GRADING.parent / "_io.py"]
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
        run = _run(tmp, None, "none", timeout)
        rc, timed_out = run.rc, run.timed_out
        events = _progress_events(tmp / "out")
        errors = [e for e in events if e.get("event") == "error"]
        if timed_out or rc != 0 or errors or not _finished(events, run.token):
            detail = errors[0].get("tb", "") if errors else (tmp / "stdio.txt").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the solution {solution_path} did not run cleanly in record mode "
                               f"(exit {rc}, timed out: {timed_out}):\n{detail}")
        inputs = tmp / "inputs-ro"
        inputs.mkdir()
        for entry in json.loads((tmp / "out" / "key" / "checks.json").read_text()):
            for case in entry["cases"]:
                for tree in case["args"] + list(case["kwargs"].values()):
                    for name in labcheck._array_files(tree):
                        shutil.copy(tmp / "out" / "key" / name, inputs / name)
        (tmp / "out" / "key" / "run.json").write_text(json.dumps({"seconds": round(run.seconds, 2)}))
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
    for gid, pts in parts:   # points per check: all or none of a part's checks, adding up to its points
        given = [c["points"] for c in checks[gid] if c.get("points") is not None]
        if given and (len(given) != len(checks[gid]) or not math.isclose(sum(given), pts)):
            raise RuntimeError(f"{solution_path.name}: test cell {gid!r} gives points to {len(given)} of its "
                               f"{len(checks[gid])} checks, adding up to {sum(given):g}; give points to every "
                               f"check (adding up to the cell's {pts:g}) or to none")
    part_of, waiting = {}, []
    for cell in solution["cells"]:
        if labs.role(cell) == "solution":
            waiting.append(labs.meta(cell)["grade_id"])
        elif labs.role(cell) == "test":
            part_of.update({gid: labs.meta(cell)["grade_id"] for gid in waiting})
            waiting = []
    try:
        seconds = float(json.loads((folder / "key" / "run.json").read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        seconds = 0.0
    return Key(solution_path.stem, sha, solution, parts, checks, folder / "inputs-ro",
               sandbox_checks, hidden, part_of, seconds, _title(solution, solution_path.stem), labs.all_parts(solution))


def _title(nb: dict, default: str) -> str:
    for c in nb.get("cells", []):
        if c.get("cell_type") == "markdown":
            for line in labs.source(c).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return default


def default_timeout(key: Key) -> float:
    """``TIMEOUT_FACTOR`` x the solution's own run, rounded up to 10 s, within
    [``TIMEOUT_MIN_S``, ``TIMEOUT_MAX_S``]: an infinite loop holds a worker for a minute, not five."""
    t = math.ceil(TIMEOUT_FACTOR * key.seconds / 10) * 10
    return float(min(TIMEOUT_MAX_S, max(TIMEOUT_MIN_S, t)))


def _finished(events: list[dict], token: str) -> bool:
    """The runner's own "done" (it carries the token only the runner read, from its stdin)."""
    return any(e.get("event") == "done" and e.get("token") == token for e in events)


def _sandbox_grading(state: Path) -> Path:
    """A copy of the part of ``cvdl/grading`` a sandbox may see (:data:`SANDBOX_GRADING`),
    mounted over the real folder: no reference implementations, no grader, no lab tools."""
    files = [_GRADING / n for n in SANDBOX_GRADING]
    folder = state / f"sandbox-grading-{_sha(*(f.read_bytes() for f in files))[:12]}"
    if not folder.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=".sandbox-grading-", dir=state))
        for f in files:
            shutil.copy(f, tmp / f.name)
        try:
            os.replace(tmp, folder)
        except OSError:   # made meanwhile by another grader
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


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
    return f"answer cell {c['part']!r}" if c.get("part") else f"cell {i + 1} (code given with the lab)"


def _real_folder(path: Path) -> bool:
    """``path`` is a folder reached without any symbolic link (the sandbox is gone by now)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode) and os.path.realpath(path) == os.path.abspath(path)
    except OSError:
        return False


def _signed_results(data: bytes | None, token: str | None, reader: "_ArrayReader", part: str = ""):
    """The list of case results in a part's file, or None; raises Tampered when the file is not
    the harness's own (a bad or missing signature)."""
    if data is None:
        return None
    try:
        doc = _parse_json(data)
    except ValueError:
        return None
    if token is None:   # unsigned (the key's own format, and tests)
        return doc if isinstance(doc, list) else None
    if not (isinstance(doc, dict) and isinstance(doc.get("payload"), dict) and isinstance(doc.get("sig"), str)):
        raise Tampered("its results file is not the one the tests wrote")
    import hmac
    from .labrun import results_mac_key
    mac_key = results_mac_key(token)
    want = hmac.new(mac_key, labcheck.canonical(doc["payload"]), "sha256").hexdigest()
    if not hmac.compare_digest(want, doc["sig"]):
        raise Tampered("its results were changed after its tests ran")
    results, files = doc["payload"].get("results"), doc["payload"].get("files")
    if not isinstance(results, list) or not isinstance(files, dict) or doc["payload"].get("part") != part:
        raise Tampered("its results file is not the one the tests wrote")
    reader.digests = {str(k): str(v) for k, v in files.items()}
    return results


def _verdict(key: Key, out: Path, token: str | None = None) -> tuple[dict, list[dict], bool]:
    """Points per part, what each part's feedback says, and whether a memory error was seen
    (``token``: the run's, which the harness signed each part's results with).

    A part's detail: ``{"part", "points", "max", "state", "failed", "hidden", "hints", "checks"}``
    with ``state`` one of ``passed``, ``failed``, ``not attempted``, ``not graded`` (and then
    ``why``); ``failed``: the visible checks that failed, each as the call it made and the reason;
    ``hidden``: [passed, total] of the hidden cases; ``checks``: for a part with points per check,
    ``[name, points earned, points]`` per check."""
    points, details, memory = {}, [], False
    read = _ArrayReader()   # one budget for the whole submission
    folders_ok = _real_folder(out) and _real_folder(out / "results")
    for gid, pts in key.parts:
        n_cases = sum(len(c["cases"]) for c in key.checks[gid])
        d = {"part": gid, "points": 0.0, "max": pts, "state": "not graded", "failed": [], "hidden": None,
             "hints": [], "checks": None}
        details.append(d)
        points[gid] = 0.0
        data = _read_untrusted(out / "results" / f"{gid}.json", 16 << 20) if folders_ok else None
        read.digests = None
        try:
            got_list = _signed_results(data, token, read, gid)
        except Tampered as exc:
            d["why"] = str(exc)
            continue
        if got_list is None or len(got_list) != n_cases:
            d["why"] = "the tests of this part did not run to the end"
            continue
        k, hid_total, hid_pass, stubs, earned, per_check = 0, 0, 0, 0, 0.0, []
        for chk in key.checks[gid]:
            chk_ok = True
            for case in chk["cases"]:
                try:
                    got = labcheck.load(got_list[k], str(out / "results"), read)
                    reason = labcheck.compare(got, case["want_node"], chk["atol"], chk["rtol"])
                    if got[0] == "error" and ("MemoryError" in got[1] or "can't allocate memory" in got[2]):
                        memory = True
                    stubs += got[0] == "error" and "NotImplementedError" in got[1] and reason is not None
                except Tampered as exc:
                    reason = str(exc)
                except Exception as exc:  # noqa: BLE001 - a malformed result is a failed case
                    reason = f"result could not be read ({type(exc).__name__})"
                k += 1
                chk_ok = chk_ok and reason is None
                if chk["hidden"]:
                    hid_total += 1
                    hid_pass += reason is None
                elif reason:
                    d["failed"].append(f"{_show_call(chk['fn'], case, key.inputs)}: {_short(reason, 400)}")
            if not chk_ok and chk.get("hint") and chk["hint"] not in d["hints"]:
                d["hints"].append(chk["hint"])
            if chk.get("points") is not None:
                earned += chk["points"] if chk_ok else 0.0
                per_check.append([chk["fn"] + (" (hidden)" if chk["hidden"] else ""),
                                  chk["points"] if chk_ok else 0.0, chk["points"]])
        passed = not d["failed"] and hid_pass == hid_total
        d["points"] = points[gid] = (pts if passed else 0.0) if not per_check else min(pts, round(earned, 6))
        d["checks"] = per_check or None
        d["hidden"] = [hid_pass, hid_total] if hid_total else None
        d["state"] = "passed" if passed else "not attempted" if stubs == n_cases else "failed"
    return points, details, memory


class Unreadable(Exception):
    """A submission that is not graded: ``status`` and ``reason`` for its row."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def read_submission(path: Path) -> bytes:
    """A submission's bytes: a regular file, opened without following a symbolic link and without
    blocking (a FIFO or a device is refused, not waited on), at most :data:`MAX_NOTEBOOK_MB`."""
    cap = MAX_NOTEBOOK_MB << 20
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        if exc.errno == getattr(__import__("errno"), "ELOOP", -1):
            raise Unreadable("invalid notebook", "the submission is a symbolic link; only regular files are graded")
        raise Unreadable("invalid notebook", f"cannot read the file: {exc.strerror}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable("invalid notebook", "the submission is not a regular file (a FIFO, a device or a "
                                                 "socket); only regular files are graded")
        if st.st_size > cap:
            raise Unreadable("invalid notebook", f"file is {st.st_size >> 20} MB, over the {MAX_NOTEBOOK_MB} MB limit")
        chunks, n = [], 0
        while n <= cap:
            b = os.read(fd, min(1 << 20, cap + 1 - n))
            if not b:
                break
            chunks.append(b)
            n += len(b)
        if n > cap:
            raise Unreadable("invalid notebook", f"file is over the {MAX_NOTEBOOK_MB} MB limit")
        return b"".join(chunks)
    finally:
        os.close(fd)


_short = labs._short


def _show_arg(tree, folder: Path, depth: int = 0) -> str:
    """One recorded argument as a student would write it (arrays by shape and dtype)."""
    if not isinstance(tree, list) or not tree or depth > 3:
        return "…"
    k = tree[0]
    try:
        if k in ("ndarray", "tensor"):
            a = np.load(folder / tree[1], mmap_mode="r", allow_pickle=False)
            kind = "array" if k == "ndarray" else "tensor"
            dtype = tree[2].replace("torch.", "") if k == "tensor" else str(a.dtype)
            return f"<{kind} {'×'.join(map(str, a.shape)) or 'scalar'} {dtype}>"
    except (OSError, ValueError, IndexError):
        return f"<{k}>"
    if k == "fixture":
        return f"<{tree[1]} fixture>"
    if k in ("list", "tuple"):
        items = [_show_arg(t, folder, depth + 1) for t in tree[1][:4]] + (["…"] if len(tree[1]) > 4 else [])
        return ("[{}]" if k == "list" else "({})").format(", ".join(items) + ("," if k == "tuple" and len(items) == 1 else ""))
    if k == "dict":
        return "{" + ", ".join(f"{key!r}: {_show_arg(v, folder, depth + 1)}" for key, v in list(tree[1].items())[:4]) + "}"
    if k == "none":
        return "None"
    if k in ("int", "float", "bool", "str"):
        return _short(repr(tree[1]), 40)
    return "…"


def _show_call(fn: str, case: dict, folder: Path) -> str:
    """``conv_output_size(7, 3)``, ``conv2d(<array 1×1×5×5 float32>, <array 1×1×3×3 float32>, stride=2)``."""
    args = [_show_arg(a, folder) for a in case.get("args", [])]
    args += [f"{k}={_show_arg(v, folder)}" for k, v in case.get("kwargs", {}).items()]
    return _short(f"{fn}({', '.join(args)})", 200)


def grade_submission(student: str, path: Path | None, key: Key, state: Path, opts: Options,
                     sandbox: str, limiter: "sandbox_limits.Limiter | None" = None,
                     grading: Path | None = None, problem: tuple[str, str] | None = None) -> Result:
    """Grade one submission (``problem``: the scan already found why it cannot be graded)."""
    t0 = time.perf_counter()
    max_total = sum(p for _, p, _ in key.all_parts)
    zero = {gid: 0.0 for gid, _ in key.parts}
    res = Result(student, "missing", "", dict(zero), 0.0, max_total, key=key.sha, sandbox=sandbox)
    if problem is not None:
        res.status, res.reason = problem
        return _done(res, t0)
    if path is None:
        res.reason = "no submission found"
        return _done(res, t0)
    try:
        raw = read_submission(path)
    except Unreadable as exc:
        res.status, res.reason = exc.status, exc.reason
        return _done(res, t0)
    res.sha256 = _sha(raw)
    res.submitted, res.time_source = gradebook.file_time(path)
    try:
        nb = _parse_json(raw.decode("utf-8-sig"))   # a byte-order mark is allowed
        answers, notes = labs.submission_answers(nb)
        res.written = labs.written_answers(nb, key.solution)
    except (ValueError, UnicodeDecodeError) as exc:
        res.status = "invalid notebook"
        res.reason = f"not a readable notebook: {str(exc)[:200]}"
        return _done(res, t0)
    ks = (nb.get("metadata") or {}).get("kernelspec") if isinstance(nb.get("metadata"), dict) else None
    want_kernel = key.solution.get("metadata", {}).get("kernelspec", {}).get("name")
    if isinstance(ks, dict) and ks.get("name") not in (want_kernel, "python3", None):
        notes.append(f"the notebook asks for kernel {_short(ks.get('name'), 40)!r}; "
                     "it was ignored and the course's Python was used")
    known = {labs.meta(c).get("grade_id") for c in key.solution["cells"] if labs.role(c) == "solution"}
    if not answers:
        notes.append("no answer cells found (cells keep nbgrader metadata: work in the lab file itself)")
    elif not set(answers) & known:
        notes.append(f"{NO_MATCH} ({', '.join(sorted(known))}): is this a submission of {key.lab}?")
    cells, more = labs.splice(key.solution, answers)
    notes += more
    banned = {}  # test part -> reason, for answers that use what their part forbids
    for gid, why in labs.answer_violations(key.solution, answers).items():
        banned[key.part_of[gid]] = f"answer cell {gid!r} {why}"
    voids = [why for why in banned.values() if labs.VOIDS in why]
    if voids:   # the tools of tampering: every part of the submission scores 0 (said once, in the notes)
        notes.append(voids[0])
        banned = {part: "0 for every part: see the note below" for part, _ in key.parts}
    jobs = state / "jobs"
    jobs.mkdir(exist_ok=True)
    job = Path(tempfile.mkdtemp(prefix="job-", dir=jobs))
    try:
        # the sandbox gets what the student's code needs and nothing the student must not see: the
        # answers and the lab's given cells, each test cell as its part's name only (no source: no
        # hidden tests, no reference helpers), and the checks' inputs without the expected outputs
        run_cells = [{"kind": "test", "part": c["part"]} if c["kind"] == "test" else c for c in cells]
        job_json = {"mode": "harness", "cells": run_cells, "checks": key.sandbox_checks,
                    "memory_mb": opts.memory_mb}
        (job / "job.json").write_text(json.dumps(job_json))
        if sandbox == "none":  # no mount: the runner reads the inputs from a private copy
            shutil.copytree(key.inputs, job / "inputs")
        timeout = opts.timeout or default_timeout(key)
        run = _run(job, key.inputs if sandbox == "bwrap" else None, sandbox, timeout, limiter, grading)
        rc, timed_out = run.rc, run.timed_out
        res.limits = limiter.describe() if limiter else ""
        res.peak_mb = run.peak_mb
        out = job / "out"
        events = _progress_events(out)
        res.exec_seconds = round(min(opts.timeout or TIMEOUT_MAX_S, sum(
            float(e["seconds"]) for e in events if isinstance(e.get("seconds"), (int, float))
            and math.isfinite(e["seconds"]) and 0 <= e["seconds"] <= TIMEOUT_MAX_S)), 3)
        points, details, memory = _verdict(key, out, run.token)
        for part, why in banned.items():
            points[part] = 0.0
            if why not in notes and not voids:
                notes.append(why)
            for d in details:
                if d["part"] == part:
                    d.update(points=0.0, state="banned", why=why)
        started = [e.get("cell") for e in events if e.get("event") == "start"]
        last = _cell_label(cells, started[-1]) if started else "start-up"
        errors = [e for e in events if e.get("event") == "error"]
        memory = memory or any(e.get("etype") == "MemoryError" or "can't allocate memory" in str(e.get("msg"))
                               for e in errors)
        done = _finished(events, run.token)
        if timed_out:
            res.status, res.reason = "timed out", f"stopped after {timeout:g} s while running {last}"
        elif run.limit:
            res.status, res.reason = "crashed", f"the sandbox was stopped at {run.limit} while running {last}"
        elif rc != 0 or not done:
            how = (f"was killed by {_signal_name(rc)}" if (rc < 0 or rc > 128) else
                   f"exited with status {rc}" if rc != 0 else "exited before the end of the notebook")
            res.status, res.reason = "crashed", f"the Python process {how} while running {last}"
        elif memory:
            res.status, res.reason = "crashed", f"exceeded the memory limit ({opts.memory_mb} MB)"
        else:
            res.status = "ok"
        if memory and res.status == "crashed" and "memory" not in res.reason:
            res.reason += f" (the memory limit of {opts.memory_mb} MB was exceeded)"
        res.points = points
        res.details = details
        res.total = float(sum(points.values()))
        n_ok = sum(1 for gid, p in key.parts if points[gid] == p)
        summary = f"{n_ok} of {len(key.parts)} {'autograded ' * (len(key.all_parts) > len(key.parts))}parts passed"
        res.stopped = res.reason
        res.reason = f"{res.reason}; {summary}" if res.reason else summary
        for e in errors[:8]:
            msg = str(e.get("msg")).splitlines()[0][:160] if e.get("msg") else ""
            res.errors.append(f"{_cell_label(cells, e.get('cell'))}: {_short(e.get('etype'), 60)}: {msg}")
        if errors:
            res.reason += f"; errors in {len(errors)} cell(s), first in {_cell_label(cells, errors[0].get('cell'))}"
        if notes:
            res.reason += "; " + "; ".join(notes[:3])
        res.notes = notes
    finally:
        shutil.rmtree(job, ignore_errors=True)
    return _done(res, t0)


def _done(res: Result, t0: float) -> Result:
    res.seconds = round(time.perf_counter() - t0, 3)
    res.total = float(sum(res.points.values()))
    res.reason = _short(res.reason, MAX_REASON)
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


def scan_submissions(folder: Path, lab_name: str, roster: list[str] | None = None
                     ) -> list[tuple[str, Path | None, tuple[str, str] | None]]:
    """``(student, notebook or None, problem or None)`` for every entry of ``folder``:
    ``STUDENT/LAB.ipynb`` (also nbgrader's ``STUDENT/LAB/LAB.ipynb``, or the one notebook in
    ``STUDENT/``), or ``STUDENT.ipynb``; roster names without an entry. Symbolic links are never
    followed (a linked folder or file is a problem, not a submission); ``problem`` is a status
    and a reason: a link, several notebooks none of them the lab's, no notebook."""
    found: dict[str, tuple] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        name = entry.name
        if name.startswith("."):
            continue
        student = name[:-6] if name.endswith(".ipynb") and not entry.is_dir(follow_symlinks=False) else name
        if student in found:   # STUDENT/ and STUDENT.ipynb: the folder wins, said in its reason
            continue
        if entry.is_symlink():
            found[student] = (None, ("invalid notebook", "the submission is a symbolic link; only regular "
                                                         "files and folders are graded"))
        elif entry.is_dir(follow_symlinks=False):
            base = Path(entry.path)
            hit = None
            for cand in (base / f"{lab_name}.ipynb", base / lab_name / f"{lab_name}.ipynb"):
                if os.path.lexists(cand) and not (cand.parent != base and cand.parent.is_symlink()):
                    hit = cand
                    break
            if hit is not None:
                found[student] = (hit, None)
                continue
            nbs = []
            for root, dirs, files in os.walk(base):      # does not follow linked folders
                dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints" and not d.startswith("."))
                nbs += [Path(root) / f for f in sorted(files) if f.endswith(".ipynb")]
            if len(nbs) == 1:
                found[student] = (nbs[0], None)
            elif nbs:
                names = ", ".join(_short(str(p.relative_to(base)), 60) for p in nbs[:4])
                found[student] = (None, ("missing", f"no submission found: {len(nbs)} notebooks ({names}"
                                                    f"{', …' if len(nbs) > 4 else ''}), none named {lab_name}.ipynb"))
            else:
                found[student] = (None, ("missing", "no submission found: the folder holds no notebook"))
        elif name.endswith(".ipynb"):
            found[student] = (Path(entry.path), None)
    for name in roster or []:
        found.setdefault(name, (None, ("missing", "no submission found (on the roster)")))
    return [(s, p, why) for s, (p, why) in sorted(found.items())]


def find_submissions(folder: Path, lab_name: str, roster: list[str] | None = None) -> list[tuple[str, Path | None]]:
    """``(student, notebook or None)`` pairs of :func:`scan_submissions`."""
    return [(s, p) for s, p, _ in scan_submissions(folder, lab_name, roster)]


_cell = gradebook.cell


def _safe_name(student: str) -> str:
    """The file name of a student's feedback and record: one-to-one, also on a case-insensitive
    disk. A name of lower-case letters, digits and ``-_.@`` is kept as it is; any other gets a
    12-digit hash of the exact name (and a kept name can never end like that)."""
    s = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.@") else "_" for ch in student)
    s = s.lstrip(".").lower()[:80]
    if s == student and not re.search(r"-[0-9a-f]{12}$", s):
        return s
    return f"{s or 'student'}-{_sha(student.encode())[:12]}"


def _lock(state: Path):
    """An exclusive lock on the gradebook's state folder (two graders on one gradebook would
    overwrite each other's records), held until the process ends."""
    f = open(state / "lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise RuntimeError(f"another cvdl grade is writing this gradebook ({state}); wait for it to finish")
    return f


def _clean_stale(state: Path) -> None:
    """Job and key folders left by a grader that was killed (we hold the lock: none is in use)."""
    for p in list((state / "jobs").glob("job-*")) + list(state.glob(".key-*")) + list(state.glob(".sandbox-grading-*")):
        shutil.rmtree(p, ignore_errors=True)


def grade(lab: str, submissions: str | os.PathLike, out: str | os.PathLike, opts: Options | None = None,
          feedback: str | os.PathLike | None = None, roster: list[str] | None = None,
          log=print, marks: str | os.PathLike | None = None, due: str | None = None,
          late_penalty: str | None = None, times: str | os.PathLike | None = None) -> list[Result]:
    """Grade every submission of ``lab`` in ``submissions``; write the gradebook ``out`` (CSV, and
    JSON beside it), one feedback file per student, and resumable records. Returns the results.

    ``marks``, ``due``, ``late_penalty``, ``times``: see :mod:`cvdl.grading.gradebook`; the last
    three are remembered in the state folder for the next run (``"none"`` clears one)."""
    opts = opts or Options()
    out = Path(out).resolve()
    sol = find_lab(lab)
    subs_dir = Path(submissions).resolve()
    if not subs_dir.is_dir():
        raise ValueError(f"submissions folder {subs_dir} does not exist")
    feedback = Path(feedback).resolve() if feedback else out.with_name(f"{out.stem}-feedback")
    state = out.with_name(f".{out.stem}.cvdl")
    for d in (state / "records", state / "jobs", feedback):
        d.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)   # the key holds the expected outputs: the instructor's only
    lock = _lock(state)
    try:
        _clean_stale(state)
        settings = _settings(state, out, marks=marks, due=due, late_penalty=late_penalty, times=times)
        return _grade(sol, subs_dir, out, opts, feedback, state, roster, log, settings)
    finally:
        lock.close()


def _settings(state: Path, out: Path, **given) -> dict:
    """The instructor's due date, late rule, times and marks files: those given now, else those
    of the last run (``"none"`` clears one); checked before anything is graded."""
    path = state / "settings.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = {}
    for k, v in given.items():
        if v is not None:
            saved[k] = None if str(v).strip().lower() == "none" else (
                str(Path(v).resolve()) if k in ("marks", "times") else str(v))
    if saved.get("due"):
        gradebook.parse_time(saved["due"], "--due")
    if saved.get("late_penalty"):
        gradebook.LateRule.parse(saved["late_penalty"])
    atomic_write_text(path, json.dumps(saved))
    if not saved.get("marks") and out.with_name(f"{out.stem}-marks.csv").exists():
        saved = dict(saved, marks=str(out.with_name(f"{out.stem}-marks.csv")))
    return saved


def _policy(settings: dict, key: Key, students: set, log) -> gradebook.Policy:
    pol = gradebook.Policy()
    maxima = {gid: pts for gid, pts, _ in key.all_parts}
    if settings.get("marks"):
        pol.marks_path = settings["marks"]
        try:
            pol.marks = gradebook.read_marks(pol.marks_path, maxima)
        except ValueError as exc:
            raise ValueError(f"{exc} (--marks none stops using a marks file)") from None
        unknown = sorted({s for s, _ in pol.marks} - students)
        log(f"marks: {len(pol.marks)} from {pol.marks_path}" +
            (f"; WARNING: not students of this batch: {', '.join(unknown[:8])}" if unknown else ""))
    if settings.get("due"):
        pol.due = gradebook.parse_time(settings["due"], "--due")
    if settings.get("late_penalty"):
        pol.rule = gradebook.LateRule.parse(settings["late_penalty"])
    if settings.get("times"):
        pol.times_path = settings["times"]
        pol.times = gradebook.read_times(pol.times_path)
    if pol.due or pol.times:
        log(f"due: {pol.due.isoformat(' ', 'minutes') if pol.due else 'none (only per-student dates)'}; "
            f"late penalty: {pol.rule.text}; submission times from "
            + (pol.times_path if pol.times else "nbgrader's timestamp.txt, else each file's modification time"))
    manual = [gid for gid, _, kind in key.all_parts if kind == "manual"]
    if manual:
        log(f"graded by hand: {', '.join(manual)} (marks in {settings.get('marks') or 'none yet'})")
    return pol


def _grade(sol, subs_dir, out, opts, feedback, state, roster, log, settings) -> list[Result]:
    sandbox = sandbox_kind(opts.sandbox)
    limiter = sandbox_limits.whole_sandbox(opts.memory_mb + sandbox_limits.HEADROOM_MB, want=opts.limits)
    limiter.reap()   # cgroups a killed grader left
    if sandbox == "none":
        log("WARNING: bubblewrap (bwrap) is not available; grading in the weaker fallback mode: each "
            "submission runs in its own process and folder with memory and time limits, but it can "
            "read files this user can read (including the solutions) and use the network. Install "
            "bubblewrap (apt-get install bubblewrap) for real isolation.")
    else:
        log("sandbox: bubblewrap (no network, read-only system, private folder, own PID namespace, "
            f"{SHM_MB} MB /tmp and /dev/shm)")
    log(f"limits: {limiter.describe()}; each process {opts.memory_mb} MB of heap"
        + ("" if limiter.kind != "watchdog" else
           " (no cgroup can be made here: the watchdog reacts within 0.1 s, not at once)"))
    log(f"lab: {sol}\nsubmissions: {subs_dir}\ngradebook: {out} (feedback in {feedback})")
    key = build_key(sol, state, timeout=max(opts.timeout or 0, TIMEOUT_MAX_S))
    if opts.timeout is None:
        opts = Options(**{**asdict(opts), "timeout": default_timeout(key)})
        log(f"timeout: {opts.timeout:g} s per submission ({TIMEOUT_FACTOR} x the solution's own "
            f"{key.seconds:.1f} s, at least {TIMEOUT_MIN_S} s; --timeout to change)")
    else:
        log(f"timeout: {opts.timeout:g} s per submission (the solution itself took {key.seconds:.1f} s)")
    grading = _sandbox_grading(state) if sandbox == "bwrap" else None
    ours = {out, out.with_suffix(".json"), feedback, state, out.with_name(f"{out.stem}-manual"),
            out.with_name(f"{out.stem}-marks.csv")}   # the gradebook's own files, when --out is in the submissions folder
    todo = [t for t in scan_submissions(subs_dir, sol.stem, roster) if (subs_dir / t[0]).resolve() not in ours]
    policy = _policy(settings, key, {t[0] for t in todo}, log)
    only = set(opts.students)
    unknown = sorted(only - {t[0] for t in todo})
    if unknown:
        raise ValueError(f"--student {', '.join(unknown)}: not in {subs_dir}" + (" or the roster" if roster else ""))
    results: dict[str, Result] = {}
    pending, ungraded = [], 0
    for student, path, problem in todo:
        rec = state / "records" / f"{_safe_name(student)}.json"
        if only and student not in only:   # --student: the others keep their records as they are
            try:
                old = Result(**json.loads(rec.read_text()))
                if old.student == student:
                    old.resumed = True
                    results[student] = old
                    continue
            except (ValueError, TypeError, OSError):
                pass
            ungraded += 1
            continue
        if not opts.regrade and not only and rec.exists() and path is not None and problem is None:
            try:
                old = Result(**json.loads(rec.read_text()))
                if old.student == student and old.key == key.sha and old.sha256 == _sha(read_submission(path)):
                    old.resumed = True
                    results[student] = old
                    continue
            except (ValueError, TypeError, OSError, Unreadable):
                pass
        pending.append((student, path, problem))
    if len(results):
        n_none = sum(1 for _, path, problem in pending if path is None or problem is not None)
        log(f"resuming: {len(results)} already graded, {len(pending) - n_none} to grade"
            + (f", {n_none} without a notebook to grade" if n_none else "") + " (--regrade to redo all)")
    if ungraded:
        log(f"WARNING: {ungraded} student(s) have no grade yet and are left out of the gradebook: "
            "run once without --student")
    lock = threading.Lock()

    def write_feedback(r: Result, row: gradebook.Row) -> None:
        r.feedback = gradebook.feedback_text(r, row, key)
        name = _safe_name(r.student)
        atomic_write_text(feedback / f"{name}.txt", r.feedback + "\n")
        atomic_write_text(feedback / f"{name}.html", gradebook.feedback_html(
            r.feedback, f"{key.lab} — feedback for {_short(r.student, 80)}"))

    def finish(r: Result) -> None:
        with lock:
            results[r.student] = r
            atomic_write_text(state / "records" / f"{_safe_name(r.student)}.json", json.dumps(asdict(r)))
            write_feedback(r, gradebook.final(r, key.all_parts, policy))
            gradebook.write(out, list(results.values()), key, policy)

    def one(student, path, problem) -> Result:
        try:
            return grade_submission(student, path, key, state, opts, sandbox, limiter, grading, problem)
        except Exception as exc:  # noqa: BLE001 - one bad submission never stops the batch
            return Result(student, "crashed", _short(f"internal grader error ({type(exc).__name__}: {exc})", 300),
                          {gid: 0.0 for gid, _ in key.parts}, 0.0, sum(p for _, p, _ in key.all_parts),
                          key=key.sha, sandbox=sandbox, limits=limiter.describe())

    bar = None
    if opts.progress and pending:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(pending), desc=f"grading {sol.stem}", unit="nb")
    with cf.ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        futures = [pool.submit(one, s, p, why) for s, p, why in pending]
        for fut in cf.as_completed(futures):
            finish(fut.result())
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    rows = gradebook.write(out, list(results.values()), key, policy)
    for r in results.values():   # marks and the late rule may have changed since a record was made
        write_feedback(r, rows[r.student])
    for p in gradebook.write_written(out.with_name(f"{out.stem}-manual"), list(results.values()), key, rows)[-1:]:
        n_unmarked = sum(1 for row in rows.values() for v in row.points.values() if v is None)
        log(f"written answers to mark: {p.parent}/ ({n_unmarked} unmarked); copy {p.name} to "
            f"{out.stem}-marks.csv beside the gradebook, fill in the points and run again")
    # students no longer in the folder (or the roster): their feedback and record go
    current = {_safe_name(s) for s, _, _ in todo}
    for rec in (state / "records").glob("*.json"):
        if rec.stem not in current:
            for ext in (".txt", ".html"):
                (feedback / f"{rec.stem}{ext}").unlink(missing_ok=True)
            rec.unlink(missing_ok=True)
    graded = [results[s] for s, p, why in todo if p is not None and why is None and s in results and results[s].sha256]
    if graded and all(NO_MATCH in r.reason or "no answer cells found" in r.reason for r in graded):
        log(f"WARNING: none of the {len(graded)} notebooks has an answer cell of {key.lab}: are these "
            "submissions of another lab?")
    return [results[s] for s, _, _ in todo if s in results]
