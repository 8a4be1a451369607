"""labs/ is generated from solutions/ (never by hand), and nbgrader accepts the sources as they are.

- regenerating from solutions/ gives labs/ byte for byte (``cvdl labs generate --check``);
- every solution follows the lab rules (nbgrader metadata, a ``parameters`` cell, 3–6 graded
  parts, hidden tests last in their cell) and its student version holds no answer;
- ``nbgrader generate_assignment`` on solutions/ gives the same student cells as ``make_lab``,
  and ``nbgrader autograde`` gives the solution full marks (nbgrader runs our ``check`` calls in
  its kernel, as it would for any instructor on JupyterHub).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cvdl.grading import cli, labs

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
BIN = Path(sys.executable).parent


def test_every_lecture_from_01_has_a_lab():
    lectures = sorted(p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb") if p.name[:2] != "00")
    assert lectures, "no lecture notebooks found"
    assert [p.stem[:2] for p in SOLUTIONS] == lectures, "every lecture 01.. has exactly one lab in solutions/"


def test_labs_are_generated_from_solutions(tmp_path, capsys):
    assert cli.main(["labs", "generate", "--check"]) == 0, capsys.readouterr().err
    labs.generate(ROOT / "solutions", tmp_path)  # and a fresh generation is identical
    for sol in SOLUTIONS:
        assert (tmp_path / sol.name).read_bytes() == (ROOT / "labs" / sol.name).read_bytes()
    assert sorted(p.name for p in (ROOT / "labs").glob("*.ipynb")) == [p.name for p in SOLUTIONS]


def test_check_reports_a_stale_lab(tmp_path, capsys):
    src, dst = tmp_path / "solutions", tmp_path / "labs"
    shutil.copytree(ROOT / "solutions", src)
    labs.generate(src, dst)
    nb = labs.read_notebook(dst / SOLUTIONS[0].name)
    nb["cells"][0]["source"] += "\nedited by hand"
    labs.write_notebook(nb, dst / SOLUTIONS[0].name)
    assert cli.main(["labs", "generate", "--check", "--solutions", str(src), "--labs", str(dst)]) == 1
    assert SOLUTIONS[0].name in capsys.readouterr().err


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_solution_follows_the_lab_rules_and_the_lab_holds_no_answer(path):
    sol = labs.read_notebook(path)
    labs.validate_solution(sol, path.name)
    parts = labs.parts(sol)
    assert 3 <= len(parts) <= 6, parts
    assert sol["metadata"]["kernelspec"]["name"] == "cvdl"
    lab = labs.read_notebook(ROOT / "labs" / path.name)
    text = json.dumps(lab)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS"):
        assert marker not in text
    n_solution = sum(labs.role(c) == "solution" for c in sol["cells"])
    stubs = [c for c in lab["cells"] if labs.role(c) == "solution"]
    assert len(stubs) == n_solution and all("raise NotImplementedError()" in labs.source(c) for c in stubs)
    for cell in lab["cells"]:  # every graded part has visible checks left for the student
        if labs.role(cell) == "test":
            assert "check(" in labs.source(cell)
    assert all(not c.get("outputs") for c in lab["cells"] if c["cell_type"] == "code")


def test_forbidden_uses_finds_imports_attributes_and_strings():
    names = ["cvdl.conv", "torch", "conv2d", "refs"]
    src = ("import torch.nn.functional as F\nfrom cvdl import conv\nfrom scipy.signal import correlate2d\n"
           "%timeit 1\ny = F.conv2d(x, w)\nz = getattr(F, 'conv2d')\nr = refs.conv2d\n"
           "def conv2d(x):\n    return np.einsum('ij->i', x)")
    assert set(labs.forbidden_uses(src, names)) == {"torch.nn.functional", "cvdl.conv", "F.conv2d", "conv2d",
                                                    "refs.conv2d", "refs", "torch.nn.functional.conv2d"}
    assert labs.forbidden_uses("def conv2d(x):\n    return conv2d_helper(x)", names) == []
    assert labs.forbidden_uses("this is not python (", names) == []
    sol = labs.read_notebook(SOLUTIONS[0])
    assert "refs" in labs.forbidden(sol)["correlate2d"] and "torch" in labs.forbidden(sol)["conv2d"]


def test_clear_solution_matches_nbgrader_rules():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\ny = 1"
    assert labs.clear_solution(src) == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\ny = 1"
    assert labs.clear_solution("x = 1") == labs.CODE_STUB
    assert labs.clear_hidden("a\n### BEGIN HIDDEN TESTS\nb\n### END HIDDEN TESTS") == "a"
    with pytest.raises(ValueError):
        labs.clear_solution("### BEGIN SOLUTION\nx")


def _nbgrader(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", CVDL_SMOKE="1")
    return subprocess.run([str(BIN / "nbgrader"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install nbgrader)")
    root = tmp_path_factory.mktemp("nbgrader_course")
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.course_id = 'cvdl'\n"
        "c.CourseDirectory.db_url = 'sqlite:///gradebook.db'\nc.ExecutePreprocessor.timeout = 300\n")
    for name in ("all", "lab01"):
        (root / "source" / name).mkdir(parents=True)
    for sol in SOLUTIONS:
        shutil.copy(sol, root / "source" / "all" / sol.name)
    shutil.copy(SOLUTIONS[0], root / "source" / "lab01" / SOLUTIONS[0].name)
    r = _nbgrader(["generate_assignment", "all", "--force"], root)
    assert r.returncode == 0, r.stdout + r.stderr
    return root


@pytest.mark.notebooks
def test_nbgrader_generates_the_same_student_versions(course):
    for sol in SOLUTIONS:
        theirs = labs.read_notebook(course / "release" / "all" / sol.name)
        ours = labs.read_notebook(ROOT / "labs" / sol.name)
        assert [labs.source(c) for c in theirs["cells"]] == [labs.source(c) for c in ours["cells"]], sol.name
        assert [labs.meta(c).get("grade_id") for c in theirs["cells"]] == \
               [labs.meta(c).get("grade_id") for c in ours["cells"]]


@pytest.mark.notebooks
def test_nbgrader_autograde_gives_the_solution_full_marks(course):
    r = _nbgrader(["generate_assignment", "lab01", "--force"], course)
    assert r.returncode == 0, r.stdout + r.stderr
    sub = course / "submitted" / "sol" / "lab01"
    sub.mkdir(parents=True)
    shutil.copy(SOLUTIONS[0], sub / SOLUTIONS[0].name)
    r = _nbgrader(["autograde", "lab01", "--force", "--ExecutePreprocessor.kernel_name=python3"], course)
    assert r.returncode == 0, r.stdout + r.stderr
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        sub = gb.find_submission("lab01", "sol")
        assert sub.max_score == 10
        assert sub.score == sub.max_score, [(g.name, g.score) for g in sub.notebooks[0].grades]
