"""The instructor's additions to ``cvdl grade``: points per check, hints on hidden checks, parts
graded by hand (written answers exported, marks merged back), overrides that survive a re-run,
due dates and late penalties, regrading one student, HTML feedback.

A tiny NumPy-only lab is built here (two autograded parts, one written answer), so each
behaviour is checked on a class whose right answers are known.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from cvdl.grading import cli, grade, gradebook, labs


def _cell(kind, text, nbg=None, tags=None):
    c = {"cell_type": kind, "metadata": {}, "source": text}
    if kind == "code":
        c.update(outputs=[], execution_count=None)
    if nbg:
        c["metadata"]["nbgrader"] = dict({"schema_version": 3, "locked": False, "task": False,
                                          "grade": False, "solution": False}, **nbg)
    if tags:
        c["metadata"]["tags"] = tags
    return c


TEST_SCALE = """check(scale, [Case(rand(3, seed=0), 2.0)], ref=lambda x, k: x * k, points=1,
      hint="multiply every element by k")
### BEGIN HIDDEN TESTS
check(scale, [Case(rand(2, 2, seed=1), -3.0)], ref=lambda x, k: x * k, points=2,
      hint="negative factors too")
### END HIDDEN TESTS"""


def tiny_solution() -> dict:
    cells = [
        _cell("markdown", "# Lab 98 — a tiny lab\n\nTwo functions and one question."),
        _cell("code", "SMOKE = True", tags=["parameters"]),
        _cell("code", "import numpy as np\nfrom cvdl.grading.labcheck import check, Case, rand"),
        _cell("code", "def scale(x, k):\n    ### BEGIN SOLUTION\n    return np.asarray(x) * k\n    ### END SOLUTION",
              {"solution": True, "grade_id": "scale"}),
        _cell("code", TEST_SCALE, {"grade": True, "grade_id": "test_scale", "points": 3, "locked": True}),
        _cell("code", "def total(x):\n    ### BEGIN SOLUTION\n    return float(np.sum(x))\n    ### END SOLUTION",
              {"solution": True, "grade_id": "total"}),
        _cell("code", "check(total, [Case(rand(4, seed=2))], ref=lambda x: float(x.sum()))",
              {"grade": True, "grade_id": "test_total", "points": 2, "locked": True}),
        _cell("markdown", "**Question.** Why is `scale` linear?"),
        _cell("markdown", "Because scaling commutes with sums.", {"solution": True, "grade": True,
                                                                   "grade_id": "why_linear", "points": 2}),
    ]
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def _submission(lab: dict, answers: dict) -> dict:
    nb = json.loads(json.dumps(lab))
    for c in nb["cells"]:
        gid = labs.meta(c).get("grade_id")
        if gid in answers:
            c["source"] = answers[gid]
    return nb


@pytest.fixture
def course(tmp_path):
    sol = tiny_solution()
    labs.validate_solution(sol, "98_tiny.ipynb")
    (tmp_path / "solutions").mkdir()
    path = tmp_path / "solutions" / "98_tiny.ipynb"
    labs.write_notebook(sol, path)
    lab = labs.make_lab(sol)
    subs = tmp_path / "subs"
    good = {"scale": "def scale(x, k):\n    return x * k", "total": "def total(x):\n    return float(x.sum())",
            "why_linear": "Because <script>alert(1)</script> k(a+b) = ka + kb."}
    half = {"scale": "def scale(x, k):\n    return x * abs(k)", "total": good["total"]}   # fails the hidden check
    for who, answers in {"ann": good, "bob": half, "cy": {}, "late": good}.items():
        (subs / who).mkdir(parents=True)
        labs.write_notebook(_submission(lab, answers), subs / who / "98_tiny.ipynb")
    os.utime(subs / "late" / "98_tiny.ipynb", (1_797_249_600, 1_797_249_600))  # 2026-12-14 12:00 UTC
    return {"root": tmp_path, "sol": path, "subs": subs, "out": tmp_path / "grades.csv"}


def _grade(c, **kw):
    opts = grade.Options(jobs=2, progress=False, **kw.pop("opts", {}))
    logs = []
    results = grade.grade(str(c["sol"]), c["subs"], c["out"], opts, log=logs.append, **kw)
    rows = {r["student"]: r for r in csv.DictReader(c["out"].open())}
    return {r.student: r for r in results}, rows, "\n".join(logs)


def test_the_lab_clears_written_answers_and_lists_every_part():
    sol = tiny_solution()
    lab = labs.make_lab(sol)
    assert [labs.source(c) for c in lab["cells"] if labs.role(c) == "manual"] == [labs.TEXT_STUB]
    assert labs.all_parts(sol) == [("test_scale", 3.0, "auto"), ("test_total", 2.0, "auto"),
                                   ("why_linear", 2.0, "manual")]
    bad = tiny_solution()
    bad["cells"][-1]["cell_type"] = "code"
    with pytest.raises(ValueError, match="code cell"):
        labs.validate_solution(bad, "x")
    task = tiny_solution()
    task["cells"][-2]["metadata"]["nbgrader"] = {"task": True, "grade_id": "t", "points": 1, "schema_version": 3}
    with pytest.raises(ValueError, match="Manually graded task"):
        labs.validate_solution(task, "x")


def test_points_per_check_hints_written_answers_and_marks(course):
    res, rows, log = _grade(course)
    assert rows["ann"]["test_scale"] == "3" and rows["ann"]["test_total"] == "2"
    assert rows["ann"]["why_linear"] == "" and rows["ann"]["max"] == "7" and rows["ann"]["total"] == "5"
    # partial credit: bob passes the visible check (1 point), not the hidden one (2 points)
    assert rows["bob"]["test_scale"] == "1" and rows["bob"]["total"] == "3", rows["bob"]
    fb = res["bob"].feedback
    assert "test_scale: 1/3" in fb and "points per check: scale 1/1, scale (hidden) 0/2" in fb, fb
    assert "hint: negative factors too" in fb and "multiply every element" not in fb
    assert "rand(2, 2" not in fb and "-3.0" not in fb          # a hidden check shows its hint, not its inputs
    assert "why_linear: not marked yet (graded by hand)" in res["ann"].feedback
    assert rows["cy"]["total"] == "0" and res["cy"].feedback.count("not attempted") == 2
    # the written answers, escaped, and a template to fill in
    page = (course["root"] / "grades-manual" / "why_linear.html").read_text()
    assert "&lt;script&gt;" in page and "<script>" not in page and "no answer" in page
    tpl = list(csv.reader((course["root"] / "grades-manual" / "marks-template.csv").open()))
    assert tpl[0] == ["student", "part", "points", "comment"] and len(tpl) == 5
    assert "written answers to mark" in log
    doc = json.loads(course["out"].with_suffix(".json").read_text())
    assert doc["title"] == "Lab 98 — a tiny lab" and doc["max"] == 7
    assert [p["kind"] for p in doc["parts"]] == ["auto", "auto", "manual"]
    assert next(s for s in doc["students"] if s["student"] == "ann")["points"]["why_linear"] is None

    # marks beside the gradebook: a hand mark, and an override of an autograded part
    marks = course["root"] / "grades-marks.csv"
    marks.write_text("student,part,points,comment\nann,why_linear,2,clear\nbob,why_linear,1,\n"
                     "bob,test_scale,3,the hidden case was ambiguous\n")
    res2, rows2, log2 = _grade(course)
    assert all(r.resumed for r in res2.values()), "marks must not re-run anything"
    assert rows2["ann"]["why_linear"] == "2" and rows2["ann"]["total"] == "7"
    assert rows2["bob"]["test_scale"] == "3" and rows2["bob"]["total"] == "6"
    assert "override: test_scale" in rows2["bob"]["reason"]
    assert "why_linear: 2/2 — marked by hand: clear" in res2["ann"].feedback
    assert "test_scale: 3/3 set by the instructor (the automatic grade was 1): the hidden case" in res2["bob"].feedback
    assert "marks: 3 from" in log2
    # a regrade keeps the marks (they are applied to whatever the automatic grade is)
    _, rows3, _ = _grade(course, opts={"regrade": True})
    assert rows3["bob"]["test_scale"] == "3" and rows3["ann"]["why_linear"] == "2"
    html = (course["root"] / "grades-feedback" / "ann.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "feedback for ann" in html and "<script" not in html


@pytest.mark.parametrize("text, why", [("ann,why_linear,3\n", "maximum is 2"), ("ann,nope,1\n", "not a part"),
                                       ("ann,why_linear,x\n", "not a number"),
                                       ("ann,why_linear,1\nann,why_linear,2\n", "two marks")])
def test_bad_marks_are_refused_before_grading(course, text, why):
    (course["root"] / "m.csv").write_text(text)
    with pytest.raises(ValueError, match=why):
        _grade(course, marks=course["root"] / "m.csv")


def test_due_dates_late_penalties_extensions_and_one_student(course):
    res, rows, log = _grade(course, due="2026-12-10 23:59+00:00", late_penalty="10%/day")
    assert rows["late"]["late_penalty"] == "2.8" and rows["late"]["total"] == "2.2", rows["late"]  # 4 days × 0.7
    assert rows["ann"]["late_penalty"] == "0" and "late" not in rows["ann"]["reason"]
    assert "3 days 12 h late" in rows["late"]["reason"] and "(10%/day)" in res["late"].feedback
    assert rows["late"]["submitted"] == "2026-12-14T12:00:00+00:00"
    # remembered: the next run without the options applies them again, and says so
    _, rows, log = _grade(course)
    assert rows["late"]["total"] == "2.2" and "late penalty: 10%/day" in log
    # the LMS's times and a per-student extension win over the file's time
    times = course["root"] / "times.csv"
    times.write_text("student,submitted,due\nlate,2026-12-11 10:00+00:00,2026-12-12 00:00+00:00\n"
                     "bob,2026-12-11 01:00+00:00,\n")
    _, rows, _ = _grade(course, times=times, late_penalty="zero")
    assert rows["late"]["total"] == "5" and rows["late"]["late_penalty"] == "0"
    assert rows["bob"]["total"] == "0" and rows["bob"]["late_penalty"] == "3"
    # nbgrader's timestamp.txt beside a notebook; --times none and --due none clear them
    (course["subs"] / "cy" / "timestamp.txt").write_text("2026-12-01 12:00:00.000000 UTC\n")
    _, rows, _ = _grade(course, times="none", due="none", opts={"regrade": True})
    assert rows["cy"]["submitted"] == "2026-12-01T12:00:00+00:00" and rows["late"]["late_penalty"] == "0"
    # --student regrades that one student; a changed submission of another is not looked at
    nb = labs.read_notebook(course["subs"] / "ann" / "98_tiny.ipynb")
    labs.write_notebook(_submission(nb, {"total": "def total(x):\n    return 0.0"}), course["subs"] / "ann" / "98_tiny.ipynb")
    shutil.copy(course["subs"] / "ann" / "98_tiny.ipynb", course["subs"] / "cy" / "98_tiny.ipynb")
    res, rows, log = _grade(course, opts={"students": ("cy",)})
    assert not res["cy"].resumed and res["ann"].resumed and rows["ann"]["total"] == "5"
    assert rows["cy"]["test_scale"] == "3" and rows["cy"]["test_total"] == "0"
    with pytest.raises(ValueError, match="--student zed"):
        _grade(course, opts={"students": ("zed",)})


@pytest.mark.parametrize("rule, late_s, want", [("10%/day", 1, 1.0), ("10%/day", 86400, 1.0),
                                                ("10%/day", 86401, 2.0), ("5%/hour", 3601, 1.0),
                                                ("1/day", 3 * 86400, 3.0), ("none", 1e6, 0.0)])
def test_late_rules(rule, late_s, want):
    assert gradebook.LateRule.parse(rule).penalty(late_s, 10) == pytest.approx(want)
    assert gradebook.LateRule.parse(rule).penalty(0, 10) == 0
    with pytest.raises(ValueError, match="late penalty"):
        gradebook.LateRule.parse("10 percent")
    with pytest.raises(ValueError, match="not a date"):
        gradebook.parse_time("next friday")


def test_points_per_check_must_add_up(course):
    sol = tiny_solution()
    sol["cells"][4]["metadata"]["nbgrader"]["points"] = 4
    bad = course["root"] / "solutions" / "97_bad.ipynb"
    labs.write_notebook(sol, bad)
    with pytest.raises(RuntimeError, match="adding up to 3"):
        grade.grade(str(bad), course["subs"], course["root"] / "b.csv", grade.Options(progress=False), log=lambda m: None)


def test_cli_options_reach_the_grader(course, capsys):
    rc = cli.main(["grade", str(course["sol"]), str(course["subs"]), "--out", str(course["out"]), "--quiet",
                   "--due", "2026-12-10 23:59+00:00", "--late-penalty", "1/day", "--student", "late",
                   "--jobs", "1"])
    assert rc == 0
    rows = {r["student"]: r for r in csv.DictReader(course["out"].open())}
    assert set(rows) == {"late"}, "the others have no record yet: left out, with a warning"
    assert "no grade yet" in capsys.readouterr().err
    assert cli.main(["grade", str(course["sol"]), str(course["subs"]), "--out", str(course["out"]),
                     "--late-penalty", "lots"]) == 2


def test_gradebook_files_inside_the_submissions_folder_are_not_students(course):
    course["out"] = course["subs"] / "grades.csv"
    _grade(course)
    (course["subs"] / "grades-marks.csv").write_text("student,part,points\nann,why_linear,1\n")
    res, rows, _ = _grade(course)
    assert set(rows) == {"ann", "bob", "cy", "late"} and rows["ann"]["why_linear"] == "1"
    assert (course["subs"] / "grades-manual" / "why_linear.html").exists()


def test_a_roster_exported_by_the_lms_is_read_by_its_key_column(tmp_path):
    roster = tmp_path / "canvas.csv"
    roster.write_text('Student,ID,SIS User ID,SIS Login ID,Section\n    Points Possible,,,,\n'
                      '"Ng, Ann",11,s11,ann,A\n"Bo, Bob",12,s12,bob,A\n')
    assert cli.read_roster(str(roster), "SIS Login ID") == ["ann", "bob"]
    with pytest.raises(ValueError, match="no column 'Login'"):
        cli.read_roster(str(roster), "Login")


def test_labs_generate_refuses_what_nbgrader_would_reject(tmp_path):
    pytest.importorskip("nbgrader")
    sol = tiny_solution()
    sol["cells"][3]["metadata"]["nbgrader"]["schema_version"] = 1     # an old metadata format
    (tmp_path / "solutions").mkdir()
    labs.write_notebook(sol, tmp_path / "solutions" / "98_tiny.ipynb")
    labs.validate_solution(sol, "98_tiny.ipynb")                        # cvdl's own rules accept it
    with pytest.raises(ValueError, match="nbgrader would reject"):
        labs.generate(tmp_path / "solutions", tmp_path / "labs")


def test_the_gradebook_is_readable_like_any_new_file_and_the_key_is_private(course):
    _grade(course)
    umask = os.umask(0o022)
    os.umask(umask)
    want = 0o666 & ~umask
    assert course["out"].stat().st_mode & 0o777 == want
    assert (course["root"] / "grades-feedback" / "ann.txt").stat().st_mode & 0o777 == want
    assert (course["root"] / ".grades.cvdl").stat().st_mode & 0o777 == 0o700
