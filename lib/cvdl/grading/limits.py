"""Limits on a sandbox *as a whole* (every process it starts, together), for ``cvdl grade``.

Per-process limits (``RLIMIT_DATA``, ``RLIMIT_AS``) do not stop a submission that forks many
processes, maps shared anonymous memory or fills a tmpfs. This module puts each sandbox under
one of, in order of preference:

- **cgroup v2** — a child cgroup of the grader's own with ``memory.max``, ``memory.swap.max = 0``
  and ``pids.max``, where the machine delegates the memory and pids controllers to us;
- **cgroup v1** — the same in the ``memory`` and ``pids`` hierarchies (a root container, or a
  delegated v1 tree);
- **watchdog** — where no cgroup can be made: the grader polls the sandbox's process tree every
  ``POLL_S`` seconds, adds up the proportional set size (PSS: shared memory counted once) of its
  processes and counts them, and kills the sandbox when either is over its limit. It reacts
  within a poll, not at once: a fast enough allocation can overshoot by what it allocates in
  that time.

:func:`whole_sandbox` picks the strongest that works here; :meth:`Limiter.describe` says which
(the gradebook's ``limits`` column). The process joins its cgroup in ``preexec`` (after fork,
before exec), so nothing it starts escapes.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

POLL_S = 0.1
HEADROOM_MB = 1024   # the sandbox as a whole: --memory (one process's heap) + this (code, tmpfs, others)
PIDS_MAX = 64        # processes and threads of one sandbox (torch starts a few threads)
_V1 = Path("/sys/fs/cgroup")


def _own_cgroups() -> dict[str, str]:
    """``{controller or "": path}`` from /proc/self/cgroup (``""`` is the v2 hierarchy)."""
    out = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in (ctrls.split(",") if ctrls else [""]):
                out[c] = path
    except (OSError, ValueError):
        pass
    return out


def _is_cgroup2(p: Path) -> bool:
    return (p / "cgroup.controllers").exists() and (p / "cgroup.subtree_control").exists()


def _base(mount: Path, own: str | None) -> Path:
    """The grader's own cgroup folder under ``mount`` (a container may show only the root)."""
    if own:
        p = mount / own.lstrip("/")
        if p.is_dir():
            return p
    return mount


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_int(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


@dataclass
class Job:
    """One sandbox's limits while it runs."""

    dirs: list = field(default_factory=list)   # cgroup folders (v1: memory and pids)
    root_pid: int = 0
    killed_for: str = ""                        # the watchdog's reason, when it killed
    peak_mb: float = 0.0


class Limiter:
    """Base: the watchdog (works everywhere; cgroup kinds override start/finish)."""

    kind = "watchdog"

    def __init__(self, memory_mb: int, pids: int = PIDS_MAX):
        self.memory_mb, self.pids = int(memory_mb), int(pids)

    def describe(self) -> str:
        how = {"watchdog": "watchdog polling every 0.1 s", "cgroup v1": "cgroup v1",
               "cgroup v2": "cgroup v2"}[self.kind]
        return f"whole sandbox: {self.memory_mb} MB, {self.pids} processes ({how})"

    def start(self, name: str) -> Job:
        return Job()

    def preexec(self, job: Job):
        """A function for ``Popen(preexec_fn=...)``: joins the job's cgroups (none here)."""
        return None

    def poll(self, job: Job, pid: int) -> str:
        """Called every ``POLL_S`` while the sandbox runs; a reason when it must be killed."""
        if self.kind != "watchdog":
            return ""
        procs = _tree(pid)
        if len(procs) > self.pids:
            job.killed_for = f"the process limit ({self.pids} processes)"
            return job.killed_for
        mb = sum(_pss_kb(p) for p in procs) / 1024
        job.peak_mb = max(job.peak_mb, mb)
        if mb > self.memory_mb:
            job.killed_for = f"the sandbox's memory limit ({self.memory_mb} MB)"
        return job.killed_for

    def finish(self, job: Job) -> str:
        """After the sandbox is gone: why it was stopped by a limit ('' if it was not)."""
        return job.killed_for

    def reap(self) -> int:
        """Remove the cgroups that graders no longer running left behind (``cvdl-PID-*`` of a
        PID that is gone, or has no processes in them); the number removed."""
        n = 0
        for base in getattr(self, "bases", []):
            for d in base.glob("cvdl-*-job-*"):
                try:
                    pid = int(d.name.split("-")[1])
                except (IndexError, ValueError):
                    continue
                if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
                    _remove([d])
                    n += not d.exists()
        return n


class CgroupV1(Limiter):
    kind = "cgroup v1"

    def __init__(self, memory_mb: int, pids: int, mem_base: Path, pids_base: Path):
        super().__init__(memory_mb, pids)
        self.mem_base, self.pids_base = mem_base, pids_base
        self.bases = [mem_base, pids_base]

    def start(self, name: str) -> Job:
        mem, pid = self.mem_base / name, self.pids_base / name
        job = Job(dirs=[mem, pid])
        try:
            for d in job.dirs:
                d.mkdir()
            limit = str(self.memory_mb << 20)
            _write(mem / "memory.limit_in_bytes", limit)
            if (mem / "memory.memsw.limit_in_bytes").exists():   # no swapping past the limit
                _write(mem / "memory.memsw.limit_in_bytes", limit)
            _write(pid / "pids.max", str(self.pids))
        except OSError:
            self.finish(job)
            raise
        return job

    def preexec(self, job: Job):
        paths = [str(d / "cgroup.procs") for d in job.dirs]

        def join():
            for p in paths:
                fd = os.open(p, os.O_WRONLY)
                os.write(fd, b"0")   # "0": the writing process itself
                os.close(fd)
        return join

    def finish(self, job: Job) -> str:
        if not job.dirs:
            return ""
        mem = job.dirs[0]
        kills = [line.split() for line in _text(mem / "memory.oom_control").splitlines()]
        oom = any(len(k) == 2 and k[0] == "oom_kill" and k[1] != "0" for k in kills)
        job.peak_mb = _read_int(mem / "memory.max_usage_in_bytes") / 2 ** 20
        _remove(job.dirs)
        return f"the sandbox's memory limit ({self.memory_mb} MB)" if oom else ""


class CgroupV2(Limiter):
    kind = "cgroup v2"

    def __init__(self, memory_mb: int, pids: int, base: Path):
        super().__init__(memory_mb, pids)
        self.base = base
        self.bases = [base]

    def start(self, name: str) -> Job:
        d = self.base / name
        job = Job(dirs=[d])
        try:
            d.mkdir()
            _write(d / "memory.max", str(self.memory_mb << 20))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(self.pids))
        except OSError:
            self.finish(job)
            raise
        return job

    preexec = CgroupV1.preexec

    def finish(self, job: Job) -> str:
        if not job.dirs:
            return ""
        d = job.dirs[0]
        events = _text(d / "memory.events")
        oom = any(line.split()[0] == "oom_kill" and line.split()[1] != "0"
                  for line in events.splitlines() if len(line.split()) == 2)
        job.peak_mb = _read_int(d / "memory.peak") / 2 ** 20
        _remove(job.dirs)
        return f"the sandbox's memory limit ({self.memory_mb} MB)" if oom else ""


def _text(p: Path) -> str:
    try:
        return p.read_text()
    except OSError:
        return ""


def _remove(dirs: list) -> None:
    """rmdir each cgroup once its processes are gone (kill stragglers; give up after ~5 s: a grader
    started later removes what is left, :meth:`Limiter.reap`)."""
    for d in dirs:
        for attempt in range(100):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                for pid in _text(d / "cgroup.procs").split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (OSError, ValueError):
                        pass
                time.sleep(0.05)


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc/*/stat's parent pids)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


_CHOSEN: dict = {}


def whole_sandbox(memory_mb: int, pids: int = PIDS_MAX, want: str = "auto") -> Limiter:
    """The strongest whole-sandbox limiter that works on this machine (``want``: ``auto``,
    ``cgroup`` to require one, ``watchdog`` to use the watchdog even where a cgroup would work)."""
    if want not in ("auto", "cgroup", "watchdog"):
        raise ValueError(f"limits must be 'auto', 'cgroup' or 'watchdog', got {want!r}")
    if want != "watchdog":
        key = "probe"
        if key not in _CHOSEN:
            _CHOSEN[key] = _probe()
        found = _CHOSEN[key]
        if found is not None:
            kind, args = found
            return CgroupV2(memory_mb, pids, *args) if kind == 2 else CgroupV1(memory_mb, pids, *args)
        if want == "cgroup":
            raise RuntimeError("--limits cgroup was asked for, but this machine lets the grader create "
                               "no cgroup with memory and pids limits")
    return Limiter(memory_mb, pids)


def _probe():
    """(2, (base,)) or (1, (memory base, pids base)) for a cgroup setup that works; else None."""
    own = _own_cgroups()
    name = f"cvdl-probe-{os.getpid()}"
    # v2: the unified hierarchy, with memory and pids available to our children
    for mount in (_V1, _V1 / "unified"):
        if not _is_cgroup2(mount):
            continue
        base = _base(mount, own.get(""))
        try:
            ctrl = (base / "cgroup.subtree_control").read_text().split()
            if not {"memory", "pids"} <= set(ctrl):
                _write(base / "cgroup.subtree_control", "+memory +pids")
            limiter = CgroupV2(64, 8, base)
            job = limiter.start(name)
            limiter.finish(job)
            return 2, (base,)
        except OSError:
            continue
    mem, pids = _V1 / "memory", _V1 / "pids"
    if (mem / "memory.limit_in_bytes").exists() and (pids / "cgroup.procs").exists():
        mem_base, pids_base = _base(mem, own.get("memory")), _base(pids, own.get("pids"))
        try:
            limiter = CgroupV1(64, 8, mem_base, pids_base)
            job = limiter.start(name)
            limiter.finish(job)
            return 1, (mem_base, pids_base)
        except OSError:
            return None
    return None
