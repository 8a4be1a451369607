"""pytest set-up shared by the unit tests (tests/) and nbval (notebooks/).

- matplotlib draws off-screen; notebook kernels started by nbval inherit ``CVDL_SMOKE=1``;
- the local data mirror ``../shared/data`` is used when present and nothing else is set;
- the notebook tests' execution times are printed as a table at the end of the run.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["CVDL_SMOKE"] = "1"
_mirror = ROOT.parent / "shared" / "data"
if "CVDL_DATA_MIRROR" not in os.environ and _mirror.is_dir():
    os.environ["CVDL_DATA_MIRROR"] = str(_mirror)

NOTEBOOK_TIMES = pytest.StashKey[list]()


def pytest_configure(config):
    config.stash[NOTEBOOK_TIMES] = []


@pytest.fixture
def notebook_times(request):
    """A list the notebook tests append ``(path, mode, seconds, status)`` rows to."""
    return request.config.stash[NOTEBOOK_TIMES]


@pytest.fixture
def one_thread():
    """One torch CPU thread for the test, restored afterwards: for tests made of many tiny
    forward/backward passes, thread hand-offs cost more than the work on a busy 2-core machine.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = config.stash.get(NOTEBOOK_TIMES, [])
    if not rows:
        return
    tr = terminalreporter
    tr.section("notebook execution times (papermill, smoke parameters)")
    width = max(len(r[0]) for r in rows)
    tr.write_line(f"{'notebook':<{width}}  {'mode':<5}  {'seconds':>7}  status")
    for path, mode, secs, status in rows:
        tr.write_line(f"{path:<{width}}  {mode:<5}  {secs:7.1f}  {status}")
    tr.write_line(f"{'total':<{width}}  {'':<5}  {sum(r[2] for r in rows):7.1f}")
