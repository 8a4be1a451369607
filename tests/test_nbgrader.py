"""nbgrader with these labs, run exactly as docs/grading.md ("With nbgrader") says.

The course folder is built with the documented ``cvdl nbgrader init`` (the console script, run in
the repository, ``.venv/bin`` on PATH as ``source .venv/bin/activate`` puts it), then nbgrader's
own commands run in it on lab 01. Six students submit the *release* notebook:

- ``correct``: the solution's answers pasted into their cells;
- ``empty``: the release as handed out;
- ``patcher``: replaces ``labcheck.check`` on the module — and prints the lab's ``SMOKE``;
- ``rebinder``: rebinds the name ``check`` that the test cells call;
- ``cheater``: replaces ``labcheck.compare`` on the module, deletes a test cell's checks, reads
  the instructor's source notebook (printing a hidden helper's line) and writes a file into the
  course folder;
- ``borrower``: correct, except that image_gradients calls ``np.gradient`` (forbidden for that
  part) and orientation_histogram ignores ``bins`` (it passes the visible checks, not the hidden ones).

What nbgrader gives each of them is asserted as it is (the weaknesses included: the docs list
them), and so is what ``cvdl grade`` gives the same ``submitted/`` folder. The kernel runs without
``CVDL_SMOKE`` in nbgrader's environment: the configuration must set it.
"""
from __future__ import annotations

import ast
import copy
import csv
import html.parser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbgrader", reason="nbgrader is not installed (pip install nbgrader)")

from cvdl.grading import cli, labs, nbgrader_course  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
BIN = Path(sys.executable).parent
LAB = "01_convolution"
SOLUTION = ROOT / "solutions" / f"{LAB}.ipynb"


def _run(cmd: list, cwd: Path, path: str | None = None) -> str:
    """Run a command as an instructor would (no CVDL_SMOKE; PATH as after activating the venv)."""
    env = dict(os.environ, PATH=path or f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("CVDL_SMOKE", None)
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def _cells(nb: dict) -> dict[str, str]:
    return {labs.meta(c)["grade_id"]: labs.source(c) for c in nb["cells"] if labs.meta(c).get("grade_id")}


PATCHER = """
import cvdl.grading.labcheck as L
L.check = lambda *args, **kwargs: None
print("SMOKE =", SMOKE)
"""
REBINDER = """
check = lambda *args, **kwargs: None                  # the name the test cells call
"""
CHEATER = """
import pathlib
import cvdl.grading.labcheck as L
L.compare = lambda *args, **kwargs: None              # check() finds no difference
course = pathlib.Path.cwd().parents[2]                 # nbgrader runs it in autograded/STUDENT/LAB/
print(next(line for line in (course / "source" / "01_convolution" / "01_convolution.ipynb").open()
           if "def _ref_gradients" in line))
(course / "written_by_a_student.txt").write_text("with the grader's rights")
"""
BORROWED_GRADIENTS = """
def image_gradients(image):
    image = np.asarray(image, dtype=np.float64)
    gx, gy = 2 * np.gradient(image, axis=1), 2 * np.gradient(image, axis=0)   # np.gradient: not allowed
    gx[:, [0, -1]] = 0
    gy[[0, -1], :] = 0
    return gx, gy
"""
NINE_BIN_HISTOGRAM = """
def orientation_histogram(image, bins=9):
    gx, gy = image_gradients(image)
    angle = np.degrees(np.arctan2(gy, gx)) % 180.0
    index = np.minimum((angle // 20.0).astype(int), 8)          # always 9 bins
    return np.bincount(index.ravel(), weights=np.hypot(gx, gy).ravel(), minlength=9).astype(np.float64)
"""


def _students(release: dict) -> dict[str, dict[str, str]]:
    """Each student's cells that differ from the release, by grade_id."""
    given, solution = _cells(release), labs.submission_answers(labs.read_notebook(SOLUTION))[0]
    return {
        "correct": solution,
        "empty": {},
        "patcher": {"correlate2d": given["correlate2d"] + "\n" + PATCHER},
        "rebinder": {"correlate2d": given["correlate2d"] + "\n" + REBINDER},
        "cheater": {"correlate2d": given["correlate2d"] + "\n" + CHEATER, "test_correlate2d": "# no checks"},
        "borrower": dict(solution, image_gradients=BORROWED_GRADIENTS, orientation_histogram=NINE_BIN_HISTOGRAM),
    }


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The documented commands, up to ``nbgrader autograde``: (course folder, autograde's log)."""
    root = tmp_path_factory.mktemp("nbgrader") / "course"
    _run(["cvdl", "nbgrader", "init", root, "--labs", "01"], ROOT)
    _run(["nbgrader", "generate_assignment", LAB], root)
    release = labs.read_notebook(root / "release" / LAB / f"{LAB}.ipynb")
    for student, cells in _students(release).items():
        nb = copy.deepcopy(release)
        for cell in nb["cells"]:
            if labs.meta(cell).get("grade_id") in cells:
                cell["source"] = cells[labs.meta(cell)["grade_id"]]
        labs.write_notebook(nb, root / "submitted" / student / LAB / f"{LAB}.ipynb")
    return root, _run(["nbgrader", "autograde", LAB], root)


def _scores(root: Path) -> dict[str, dict[str, float]]:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "cvdl") as gb:
        return {s: {g.name: g.score for g in gb.find_submission(LAB, s).notebooks[0].grades}
                for s in ("correct", "empty", "patcher", "rebinder", "cheater", "borrower")}


def _output_text(root: Path, student: str) -> str:
    nb = labs.read_notebook(root / "autograded" / student / LAB / f"{LAB}.ipynb")
    return json.dumps([c.get("outputs", []) for c in nb["cells"]])


@pytest.mark.notebooks
def test_nbgrader_autograde_scores_and_what_it_does_not_stop(course):
    root, log = course
    scores = _scores(root)
    total = {s: sum(v.values()) for s, v in scores.items()}
    assert total["correct"] == 10 and total["empty"] == 0, scores
    # replacing labcheck.check on the module changes nothing: the test cells call the `check` the
    # lab's given cell imported before the answers ran
    assert total["patcher"] == 0, scores["patcher"]
    # rebinding that name, or replacing the module's compare, passes every test cell: nbgrader gives
    # full marks to students who wrote no answer
    assert total["rebinder"] == 10 and total["cheater"] == 10, scores
    # forbidden names are not enforced (np.gradient scores 2/2); a part is all or nothing (0/3)
    assert scores["borrower"] == {"test_correlate2d": 2, "test_conv2d": 3, "test_image_gradients": 2,
                                  "test_orientation_histogram": 0}
    # the configuration's CVDL_SMOKE=1 reached the kernel (the test's environment has none)
    assert "SMOKE = True" in _output_text(root, "patcher")
    # no sandbox: student code ran with the instructor's rights, read source/ and wrote into the course
    assert (root / "written_by_a_student.txt").read_text() == "with the grader's rights"
    assert "def _ref_gradients" in _output_text(root, "cheater")
    # one checksum warning: the cheater's edited test cell (RestoreHiddenTests puts the hidden
    # tests back into the release's test cells without one)
    warned = [line for line in log.splitlines() if "checksum" in line.lower()]
    assert len(warned) == 1 and "test_correlate2d" in warned[0], warned
    graded = _cells(labs.read_notebook(root / "autograded" / "cheater" / LAB / f"{LAB}.ipynb"))
    assert graded["test_correlate2d"] == _cells(labs.read_notebook(SOLUTION))["test_correlate2d"]  # restored


@pytest.mark.notebooks
def test_cvdl_grade_on_nbgrader_submitted_folder(course, tmp_path):
    root, _ = course
    out = tmp_path / "grades.csv"
    _run(["cvdl", "grade", "01", root / "submitted", "--out", out, "--quiet"], ROOT)
    rows = {r["student"]: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert sorted(rows) == ["borrower", "cheater", "correct", "empty", "patcher", "rebinder"]
    assert all(r["status"] == "ok" for r in rows.values()), rows
    total = {s: float(r["total"]) for s, r in rows.items()}
    assert total == {"correct": 10, "empty": 0, "patcher": 0, "rebinder": 0, "cheater": 0, "borrower": 5}, rows
    assert float(rows["borrower"]["test_image_gradients"]) == 0 and "np.gradient" in rows["borrower"]["reason"]
    assert float(rows["borrower"]["test_conv2d"]) == 3


class _Text(html.parser.HTMLParser):
    """The text of an HTML page as a reader sees it (code highlighting's tags removed)."""

    def __init__(self):
        super().__init__()
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("style", "script")

    def handle_endtag(self, tag):
        if tag in ("style", "script") and self.skip:
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def _page_text(path: Path) -> str:
    p = _Text()
    p.feed(path.read_text(encoding="utf-8"))
    return "".join(p.parts)


def _hidden(nb: dict) -> tuple[list[str], set[str]]:
    """The lines of every hidden region (markers included) and the names defined at their top level."""
    lines, names = [], set()
    for cell in nb["cells"]:
        text = labs.source(cell).split("\n")
        for a, b in labs.hidden_blocks(labs.source(cell)) if labs.role(cell) == "test" else []:
            lines += [line.strip() for line in text[a:b + 1] if line.strip()]
            for node in ast.parse("\n".join(text[a + 1:b])).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    names.add(node.name)
                for target in getattr(node, "targets", []):
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return lines, names


@pytest.mark.notebooks
def test_nbgrader_feedback_shows_no_hidden_test(course):
    root, _ = course
    _run(["nbgrader", "generate_feedback", LAB], root)
    lines, names = _hidden(labs.read_notebook(SOLUTION))
    assert len(lines) > 20 and {"_ref_gradients", "_ref_histogram"} <= names
    visible = "check(correlate2d, [Case(rand(6, 6, seed=1), rand(3, 3, seed=2))], ref=refs.correlate2d)"
    passed, failed = nbgrader_course.PASSED, nbgrader_course.FAILED
    expected = {"correct": [passed] * 4, "empty": [failed] * 4, "patcher": [failed] * 4, "rebinder": [passed] * 4,
                "cheater": [passed] * 4, "borrower": [passed] * 3 + [failed]}
    for student, verdicts in expected.items():
        page = _page_text(root / "feedback" / student / LAB / f"{LAB}.html")
        submitted = labs.read_notebook(root / "submitted" / student / LAB / f"{LAB}.ipynb")
        own = "\n".join(labs.source(c) for c in submitted["cells"])     # what the student had anyway
        if student == "cheater":    # what a submission prints of source/ is in its own feedback
            assert "def _ref_gradients" in page
        else:
            leaked = [line for line in lines if line in page and line not in own]
            assert not leaked, (student, leaked[:5])
            assert not [n for n in names if n in page], student
        assert visible in page, student          # the visible checks are there, highlighted code read as text
        assert "Traceback" not in page, student
        assert [line.strip() for line in page.splitlines() if line.startswith("The checks of")] == verdicts, student


@pytest.mark.notebooks
def test_nbgrader_generates_the_student_cells_of_cvdl_labs_generate(tmp_path):
    """Every lab, through the course folder of ``cvdl nbgrader init``; nbgrader started by its full
    path without the venv on PATH (the configuration finds ``alembic`` next to its Python)."""
    root = tmp_path / "course"
    _run(["cvdl", "nbgrader", "init", root], ROOT)
    _run([BIN / "nbgrader", "generate_assignment", "*"], root, path=os.defpath)
    for sol in SOLUTIONS:
        theirs = labs.read_notebook(root / "release" / sol.stem / sol.name)
        ours = labs.read_notebook(ROOT / "labs" / sol.name)
        assert [labs.source(c) for c in theirs["cells"]] == [labs.source(c) for c in ours["cells"]], sol.name
        assert [labs.meta(c).get("grade_id") for c in theirs["cells"]] == \
               [labs.meta(c).get("grade_id") for c in ours["cells"]]


# ----------------------------------------------------------------------------------------------
# Without running nbgrader
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_nbgrader_accepts_every_solution(path):
    assert nbgrader_course.nbgrader_problems(labs.read_notebook(path)) == []


def test_nbgrader_problems_are_readable():
    nb = labs.read_notebook(SOLUTION)
    cells = {labs.meta(c).get("grade_id"): c for c in nb["cells"]}
    del cells["test_conv2d"]["metadata"]["nbgrader"]["points"]
    cells["test_image_gradients"]["metadata"]["nbgrader"]["schema_version"] = 2
    assert nbgrader_course.nbgrader_problems(nb) == [
        "cell 8 (test_conv2d): nbgrader cell 'test_conv2d' does not have points",
        "cell 11 (test_image_gradients): Outdated schema version: 2 (expected 3) "
        "(`nbgrader update` rewrites old metadata)"]
    nb = labs.read_notebook(SOLUTION)
    next(c for c in nb["cells"] if labs.meta(c).get("grade_id") == "conv2d")["metadata"]["nbgrader"]["grade_id"] = \
        "correlate2d"
    assert nbgrader_course.nbgrader_problems(nb) == ["Duplicate grade id: correlate2d"]


def test_init_refuses_to_overwrite_and_never_touches_the_gradebook(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    course = tmp_path / "course"
    assert cli.main(["nbgrader", "init", str(course), "--labs", "01", "02", "--course-id", "cv"]) == 0
    assert sorted(p.relative_to(course).as_posix() for p in course.rglob("*") if p.is_file()) == [
        "nbgrader_config.py", "source/01_convolution/01_convolution.ipynb",
        "source/02_conv_arithmetic/02_conv_arithmetic.ipynb"]
    assert (course / "source" / LAB / f"{LAB}.ipynb").read_bytes() == SOLUTION.read_bytes()
    config = (course / "nbgrader_config.py").read_text()
    assert "c.CourseDirectory.course_id = 'cv'" in config and 'os.environ["CVDL_SMOKE"] = "1"' in config
    assert f"cd {course}\n  nbgrader generate_assignment {LAB}" in capsys.readouterr().out
    assert cli.main(["nbgrader", "init", str(course), "--labs", "01", "--course-id", "cv"]) == 0  # the same files
    (course / "gradebook.db").write_bytes(b"grades")
    (course / "source" / LAB / f"{LAB}.ipynb").write_text("{}")
    assert cli.main(["nbgrader", "init", str(course), "--labs", "01"]) == 2
    err = capsys.readouterr().err
    assert f"source/{LAB}/{LAB}.ipynb" in err and "nbgrader_config.py" in err and "--force" in err
    assert (course / "source" / LAB / f"{LAB}.ipynb").read_text() == "{}"
    assert cli.main(["nbgrader", "init", str(course), "--labs", "01", "--force"]) == 0
    assert (course / "source" / LAB / f"{LAB}.ipynb").read_bytes() == SOLUTION.read_bytes()
    assert (course / "gradebook.db").read_bytes() == b"grades"
    assert cli.main(["nbgrader", "init", str(course), "--labs", "99"]) == 2
    assert "lab '99' matches 0" in capsys.readouterr().err


def test_init_refuses_a_lab_nbgrader_would_reject(tmp_path, monkeypatch):
    nb = labs.read_notebook(SOLUTION)
    next(c for c in nb["cells"] if labs.role(c) == "test")["metadata"]["nbgrader"]["schema_version"] = 2
    labs.write_notebook(nb, tmp_path / "solutions" / SOLUTION.name)
    monkeypatch.setenv("CVDL_SOLUTIONS", str(tmp_path / "solutions"))
    with pytest.raises(ValueError, match="01_convolution.ipynb: nbgrader would refuse it: cell 5 "
                                         r"\(test_correlate2d\): Outdated schema version"):
        nbgrader_course.init(tmp_path / "course")
    assert not (tmp_path / "course").exists()


def test_the_configuration_keeps_nbgraders_default_preprocessors():
    """Ours replace or join nbgrader's defaults, which are otherwise kept in their order."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.converters import Autograde, GenerateFeedback
    from nbgrader.preprocessors import GetGrades, OverwriteCells
    config = {"get_config": lambda: config["c"], "__file__": "/course/nbgrader_config.py"}
    from traitlets.config import Config
    config["c"] = Config()
    environ = dict(os.environ)
    try:
        exec(nbgrader_course.CONFIG.format(course_id="cvdl", timeout=300), config)
        assert os.environ["CVDL_SMOKE"] == "1" and os.environ["PATH"].startswith(str(BIN))
    finally:
        os.environ.clear()
        os.environ.update(environ)
    c = config["c"]
    assert GenerateFeedback.class_traits()["preprocessors"].default() == [GetGrades, CSSHTMLHeaderPreprocessor]
    assert c.GenerateFeedback.preprocessors == [GetGrades, nbgrader_course.HideHiddenTests, CSSHTMLHeaderPreprocessor]
    default = Autograde.class_traits()["sanitize_preprocessors"].default()
    assert c.Autograde.sanitize_preprocessors == [nbgrader_course.RestoreHiddenTests if p is OverwriteCells else p
                                                  for p in default]
    assert issubclass(nbgrader_course.RestoreHiddenTests, OverwriteCells)
    assert c.CourseDirectory.db_url == "sqlite:////course/gradebook.db"


def test_hide_hidden_tests_on_one_cell():
    import nbformat
    nb = nbformat.from_dict(labs.read_notebook(SOLUTION))
    tests = [c for c in nb.cells if labs.role(c) == "test"]
    tests[0].outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="expected 42",
                                               traceback=["check(correlate2d, [Case(rand(7, 9, seed=11)"])]
    tests[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hidden value 42\n")]
    nb, _ = nbgrader_course.HideHiddenTests()(nb, {})
    lab = labs.read_notebook(ROOT / "labs" / SOLUTION.name)     # the student's own test cells
    assert [labs.source(c) for c in tests] == [labs.source(c) for c in lab["cells"] if labs.role(c) == "test"]
    assert [c.outputs for c in tests] == [[nbformat.v4.new_output("stream", name="stdout", text=text + "\n")]
                                          for text in [nbgrader_course.FAILED] + [nbgrader_course.PASSED] * 3]
