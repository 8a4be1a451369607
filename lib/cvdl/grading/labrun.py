"""Execute a prepared lab notebook, cell by cell, for the grader: ``python .../cvdl/grading/labrun.py JOB_DIR``.

This is the only code that runs next to a student's code (inside the sandbox). It trusts nothing
it produces: it only *executes* cells and writes raw facts to ``JOB_DIR/out`` — which cell
started, which raised what, and (via :func:`cvdl.grading.labcheck.run_part`) what the student's functions
returned on the grading inputs. Verdicts are computed by the grader, outside.

``JOB_DIR/job.json`` holds ``mode`` (``harness``: a student's cells, tests replaced by
``run_part``; ``record``: the instructor's solution, test cells record the grading key),
``cells`` (``{"kind": "code", "source", "part"}``, or ``{"kind": "test", "part"}`` — in harness
mode a test cell carries no source: the sandbox never sees hidden tests or reference helpers;
in record mode also ``source`` and ``hidden_blocks``) and the limits. The first line of stdin is
a token that the final ``done`` event carries: a submission that writes a ``done`` of its own and
exits does not know it (it is read before any cell runs and kept in no file).
Cells run in one IPython ``InteractiveShell`` (magics work) in the process itself: no Jupyter
kernel, no sockets, and a crash is this process's exit status.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback

LOG_CAP = 1 << 20  # bytes of printed output kept per run


class _Capped:
    """A text stream that keeps the first ``cap`` bytes and counts the rest."""

    def __init__(self, f, cap: int):
        self.f, self.cap, self.n = f, cap, 0

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            s = str(s)
        if self.n < self.cap:
            chunk = s[: self.cap - self.n]
            self.f.write(chunk)
            self.f.flush()
            if self.n + len(s) >= self.cap:
                self.f.write("\n[output truncated by the grader]\n")
        self.n += len(s)
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.f.fileno()

    @property
    def encoding(self) -> str:
        return "utf-8"


def results_mac_key(token: str) -> bytes:
    """The key that signs each part's results (the runner) and checks them (the grader)."""
    import hashlib
    return hashlib.sha256(b"cvdl-results\0" + token.encode()).digest()


def _limits(job: dict) -> None:
    mb = int(job.get("memory_mb") or 0)
    if mb > 0:
        data = mb << 20
        resource.setrlimit(resource.RLIMIT_DATA, (data, data))
        # address space: the data limit plus room for shared libraries (torch maps ~3.5 GB)
        asz = data + (int(job.get("address_headroom_mb", 6144)) << 20)
        resource.setrlimit(resource.RLIMIT_AS, (asz, asz))
    fsize = int(job.get("file_mb", 256)) << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big write fails instead of killing us


def _strip_hidden(source: str, blocks: list[list[int]]) -> tuple[str, list[str]]:
    lines = source.split("\n")
    hidden = set()
    parts = []
    for a, b in blocks:
        hidden.update(range(a, b + 1))
        parts.append("\n".join(lines[a + 1:b]))
    visible = "\n".join(line for i, line in enumerate(lines) if i not in hidden)
    return visible, parts


def main(argv: list[str]) -> int:
    if __name__ == "__main__" and sys.path and os.path.basename(sys.path[0]) == "grading":
        del sys.path[0]  # run as a script: cvdl/grading must not shadow top-level modules
    job_dir = os.path.abspath(argv[1])
    # the grader died (its parent-death signal, in the fallback mode): take the process group along
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    token = sys.stdin.readline().strip()
    sys.stdin = open(os.devnull)
    import hmac
    mac_key = results_mac_key(token)

    def sign(data: bytes) -> str:
        return hmac.new(mac_key, data, "sha256").hexdigest()
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    _limits(job)
    out = os.path.join(job_dir, "out")
    os.makedirs(out, exist_ok=True)
    progress = open(os.path.join(out, "progress.jsonl"), "a", buffering=1)

    def event(**kw) -> None:
        progress.write(json.dumps(kw) + "\n")

    log = open(os.path.join(out, "log.txt"), "w", buffering=1)
    sys.stdout = _Capped(log, LOG_CAP)
    sys.stderr = sys.stdout
    import faulthandler
    faulthandler.enable(file=open(os.path.join(out, "fault.txt"), "w"))

    work = os.path.join(job_dir, "work")
    os.makedirs(work, exist_ok=True)
    os.chdir(work)
    mode = job["mode"]
    if mode not in ("harness", "record"):
        raise ValueError(f"mode must be 'harness' or 'record', got {mode!r}")

    from traitlets.config import Config
    from IPython.core.interactiveshell import InteractiveShell
    cfg = Config()
    cfg.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=cfg)
    ns = shell.user_ns
    for name in ("exit", "quit"):   # each holds the shell (._ip): a way to run any code
        ns.pop(name, None)
    # no module is imported from the working folder: an answer cannot write a module and import it
    sys.path[:] = [p for p in sys.path if p not in ("", ".", work) and os.path.abspath(p) != work]

    key = os.path.join(out, "key")
    record: dict = {"folder": key, "checks": []}
    if mode == "record":
        os.makedirs(key, exist_ok=True)

    def run_source(src: str) -> tuple[str, str, str] | None:
        result = shell.run_cell(src, store_history=False)
        err = result.error_before_exec or result.error_in_exec
        if err is None:
            return None
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        return type(err).__name__, str(err)[:500], tb[-4000:]

    labcheck = None  # imported at the first test cell, after the notebook's own imports

    for i, cell in enumerate(job["cells"]):
        t0 = time.perf_counter()
        event(cell=i, event="start")
        err = None
        if cell["kind"] == "test" and mode == "harness":
            try:
                if labcheck is None:
                    from cvdl.grading import labcheck
                labcheck.run_part(job["checks"].get(cell["part"], []), ns, os.path.join(job_dir, "inputs"),
                                  os.path.join(out, "results"), cell["part"], sign=sign)
            except BaseException as exc:  # noqa: BLE001 - report, go on with the next cell
                err = (type(exc).__name__, str(exc)[:500], traceback.format_exc()[-4000:])
        elif cell["kind"] == "test":
            if labcheck is None:
                from cvdl.grading import labcheck
            visible, hidden = _strip_hidden(cell["source"], cell.get("hidden_blocks", []))
            for src, is_hidden in [(visible, False)] + [(h, True) for h in hidden]:
                labcheck._CONTEXT = dict(record, mode="record", part=cell["part"], hidden=is_hidden)
                err = run_source(src)
                labcheck._CONTEXT = None
                if err:
                    break
        else:
            err = run_source(cell["source"])
        if err:  # drop the failed cell's frames (a memory bomb's blocks would stay referenced)
            sys.last_type = sys.last_value = sys.last_traceback = None
            if hasattr(sys, "last_exc"):
                sys.last_exc = None
            shell.last_execution_result = None
            import gc
            gc.collect()
        dt = round(time.perf_counter() - t0, 4)
        if err:
            event(cell=i, event="error", etype=err[0], msg=err[1], tb=err[2], seconds=dt)
        else:
            event(cell=i, event="ok", seconds=dt)
    if mode == "record":
        with open(os.path.join(key, "checks.json"), "w") as f:
            json.dump(record["checks"], f)
    event(event="done", token=token)
    del token
    progress.close()
    os._exit(0)  # skip interpreter teardown (atexit hooks a notebook may have registered)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
