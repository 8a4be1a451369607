"""labs/ is generated from solutions/ (never by hand).

- regenerating from solutions/ gives labs/ byte for byte (``cvdl labs generate --check``);
- every solution follows the lab rules (nbgrader metadata, a ``parameters`` cell, 3–6 graded
  parts, hidden tests last in their cell) and its student version holds no answer.

nbgrader itself (its ``generate_assignment`` gives the same student cells as ``make_lab``,
autograde, feedback) is tested in ``tests/test_nbgrader.py``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cvdl.grading import cli, labs

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))


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
