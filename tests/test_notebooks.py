"""Execute every lecture notebook (and every lab solution) with smoke parameters via papermill.

All notebooks run from this one pytest process (kernel start and imports cost seconds each), with
a per-cell timeout; the execution times are printed as a table at the end of the run
(see ``conftest.py``). A notebook must finish its smoke run within its budget:

``SMOKE_BUDGET_S`` below maps ``"notebooks/<file>"`` or ``"solutions/<file>"`` to seconds, with a
default per folder (``"notebooks"``: the course's 30 s promise; ``"solutions"``: 45 s). A new
notebook that needs more than its folder's default adds one line with its file name (and why);
a test checks every named file exists. ``CVDL_SMOKE_BUDGET_S`` overrides every budget on a slower
or busier machine.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from run_notebooks import execute  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 120
# Smoke-run budgets in seconds on a 2-core CPU, kernel start included (see the module docstring).
SMOKE_BUDGET_S = {
    "notebooks": 30.0,                                   # default: the course's promise (CONTRIBUTING.md)
    "notebooks/04_understanding_cnns.ipynb": 45.0,       # the heavier lectures
    "notebooks/05_inversion_and_deep_art.ipynb": 45.0,
    "notebooks/06_adversarial_and_fooling.ipynb": 45.0,
    "solutions": 45.0,                                   # default for the labs
}
_OVERRIDE = os.environ.get("CVDL_SMOKE_BUDGET_S")


def smoke_budget_s(path: Path) -> float:
    if _OVERRIDE:
        return float(_OVERRIDE)
    folder = path.parent.name
    return SMOKE_BUDGET_S.get(f"{folder}/{path.name}", SMOKE_BUDGET_S[folder])


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


def test_smoke_budgets_name_existing_notebooks():
    named = {key for key in SMOKE_BUDGET_S if "/" in key}
    missing = sorted(key for key in named if not (ROOT / key).is_file())
    assert not missing, f"SMOKE_BUDGET_S names notebooks that do not exist (renamed?): {missing}"
    assert {p.parent.name for p in NOTEBOOKS + SOLUTIONS} <= set(SMOKE_BUDGET_S), "a folder has no default budget"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_runs_in_smoke_mode(path, tmp_path, notebook_times):
    arrays = tmp_path / "arrays"
    run = execute(path, tmp_path / path.name, smoke=True, cell_timeout=CELL_TIMEOUT_S, arrays_dir=arrays)
    notebook_times.append((f"{path.parent.name}/{path.name}", "smoke", run.seconds, run.status))
    assert run.status == "ok", f"{path.name} failed: {run.error}"
    # every image a figure showed (cvdl.plot / cvdl.record_array) is meaningful at smoke size too
    for npy in sorted(arrays.glob("*.npy")) if arrays.is_dir() else []:
        a = np.load(npy, allow_pickle=False).astype(np.float64)
        assert a.size and np.isfinite(a).all(), f"{path.name}: figure array {npy.name} has NaN/inf"
        assert a.max() > a.min(), f"{path.name}: figure array {npy.name} is constant (a blank image)"
    budget = smoke_budget_s(path)
    assert run.seconds <= budget, f"{path.name} took {run.seconds:.1f} s in smoke mode; the budget is {budget:.0f} s"


# The notebooks that use the real ImageNet networks when their weights are present must also run
# without them: the weights are made unavailable (CVDL_UNAVAILABLE), the fallback message is
# printed once, and the notebook carries on with the course-trained networks.
IMAGENET_NOTEBOOKS = [p for p in NOTEBOOKS if p.name[:2] in ("03", "04", "05", "06", "08", "12", "13")]


@pytest.mark.notebooks
@pytest.mark.parametrize("path", IMAGENET_NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_without_the_imagenet_weights(path, tmp_path, notebook_times, monkeypatch):
    import json

    monkeypatch.setenv("CVDL_UNAVAILABLE", "mobilenet_v2,efficientnet_lite0")
    out = tmp_path / path.name
    run = execute(path, out, smoke=True, cell_timeout=CELL_TIMEOUT_S)
    notebook_times.append((f"{path.parent.name}/{path.name} (no weights)", "smoke", run.seconds, run.status))
    assert run.status == "ok", f"{path.name} failed without the ImageNet weights: {run.error}"
    text = "".join("".join(o.get("text", "")) for c in json.loads(out.read_text())["cells"]
                   for o in c.get("outputs", []))
    for name in ("mobilenet_v2", "efficientnet_lite0"):
        assert text.count(f"Pretrained weights '{name}' are not available") <= 1, f"{path.name}: {name} announced twice"
    if "imagenet_model" in path.read_text():
        assert "Pretrained weights '" in text and "course" in text, \
            f"{path.name} uses the ImageNet networks but said nothing about falling back"
