"""``cvdl summary`` and ``cvdl export`` on a synthetic ``grades.json``.

The class of six: alice and bob full marks, carol partial (and late), dave partial with the essay
not marked, erin crashed, frank missing. Every expected number below is worked out by hand.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import struct

import pytest
from matplotlib.text import Text

from cvdl.grading import cli, report

TITLE = "Lab 02 — Convolution layers"
PARTS = [{"id": "conv_out", "points": 2.0, "kind": "auto"},
         {"id": "pool", "points": 4.0, "kind": "auto"},
         {"id": "essay", "points": 2.0, "kind": "manual"}]


def _student(name, status, conv_out, pool, essay, penalty=0.0, late=""):
    points = {} if status == "missing" else {"conv_out": conv_out, "pool": pool, "essay": essay}
    total = sum(v for v in points.values() if v) - penalty
    return {"student": name, "status": status, "points": points, "penalty": penalty, "total": round(total, 4),
            "submitted": None if status == "missing" else "2026-12-09T10:00:00+00:00", "late": late,
            "reason": "no submission found" if status == "missing" else ""}


CLASS = {"lab": "02_conv_layers", "title": TITLE, "max": 8.0, "parts": PARTS,
         "due": "2026-12-10T23:59:00+00:00", "late_rule": "10%/day",
         "students": [_student("alice", "ok", 2, 4, 2),
                      _student("bob", "ok", 2, 4, 2),
                      _student("carol", "ok", 2, 0, 1, penalty=0.3, late="1 day late"),   # 3 - 0.3
                      _student("dave", "ok", 0, 4, None),
                      _student("erin", "crashed", 2, 0, None),
                      _student("frank", "missing", None, None, None)]}


def _write(tmp_path, doc=CLASS, csv_too=True):
    js = tmp_path / "grades.json"
    js.write_text(json.dumps(doc), encoding="utf-8")
    if csv_too:
        (tmp_path / "grades.csv").write_text("student,status\n", encoding="utf-8")
    return js


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def _texts(fig):
    return [t.get_text() for t in fig.findobj(Text)]


# ---------------------------------------------------------------- summary

def test_summary_numbers_match_the_hand_computed_ones(tmp_path):
    st = report.summarize(report.load_grades(_write(tmp_path)))
    parts = {p["id"]: p for p in st["parts"]}
    assert st["ran"] == 5                                   # frank (missing) has no pass rates
    assert (parts["conv_out"]["passed"], parts["conv_out"]["graded"]) == (4, 5)   # dave 0
    assert parts["conv_out"]["mean"] == pytest.approx(8 / 5)
    assert (parts["pool"]["passed"], parts["pool"]["graded"]) == (3, 5)           # carol, erin 0
    assert parts["pool"]["rate"] == pytest.approx(0.6)
    assert (parts["essay"]["passed"], parts["essay"]["graded"], parts["essay"]["unmarked"]) == (2, 3, 2)
    assert parts["essay"]["mean"] == pytest.approx(5 / 3)
    # totals of all six, frank as 0: 8, 8, 2.7, 4, 2, 0
    assert st["mean"] == pytest.approx(24.7 / 6)
    assert st["median"] == pytest.approx((2.7 + 4) / 2)
    assert (st["min"], st["max"]) == (0, 8)
    assert st["statuses"] == {"ok": 4, "crashed": 1, "timed out": 0, "invalid notebook": 0, "missing": 1}
    assert st["unmarked"] == {"dave": ["essay"], "erin": ["essay"]}
    assert [s["student"] for s in st["late"]] == ["carol"]


def test_summary_command_writes_the_figure_beside_the_csv_and_prints_the_table(tmp_path, capsys):
    _write(tmp_path)
    assert cli.main(["summary", str(tmp_path / "grades.csv")]) == 0
    png = tmp_path / "grades-summary.png"
    w, h = _png_size(png)
    assert (w, h) == (1200, 750) and png.stat().st_size > 20_000
    out = capsys.readouterr().out
    assert "conv_out  auto      2    4/5     80%   1.60" in out
    assert "essay     manual    2    2/3     67%   1.67  (2 not marked)" in out
    assert "mean 4.12, median 3.35, min 0, max 8 (of 8)" in out
    assert "statuses: 4 ok, 1 crashed, 1 missing" in out
    assert "carol (1 day late, -0.3)" in out and "dave (essay), erin (essay)" in out
    assert "nobody passed" not in out


def test_summary_flags_a_part_nobody_passed(tmp_path, capsys):
    doc = copy.deepcopy(CLASS)
    for s in doc["students"]:
        if s["status"] != "missing":
            s["total"] -= s["points"]["pool"]
            s["points"]["pool"] = 1.0      # a broken test: everyone gets partial points at most
            s["total"] += 1.0
    gb = report.load_grades(_write(tmp_path, doc))
    st = report.summarize(gb)
    pool = next(line for line in report.summary_text(gb, st).splitlines() if line.startswith("  pool "))
    assert pool.split() == ["pool", "auto", "4", "0/5", "0%", "1.00", "<-", "nobody", "passed:", "check", "the", "test"]
    texts = _texts(report.summary_figure(gb, st))
    assert "0%\n0/5\nnobody passed" in texts and "80%\n4/5" in texts


def test_summary_figure_labels_rates_and_counts(tmp_path):
    gb = report.load_grades(_write(tmp_path))
    texts = _texts(report.summary_figure(gb, report.summarize(gb)))
    assert {"80%\n4/5", "60%\n3/5", "67%\n2/3\n(2 not marked)"} <= set(texts)
    assert "mean 4.12" in texts and "median 3.35" in texts
    assert any("missing = 0" in t for t in texts) and any("among the notebooks that ran" in t for t in texts)


@pytest.mark.parametrize("students, expect", [
    ([], "no students in the gradebook"),
    ([_student("frank", "missing", None, None, None), _student("gus", "missing", None, None, None)],
     "no notebook ran: no pass rates"),
    ([_student("carol", "ok", 2, 0, 1, penalty=0.3, late="1 day late")], "median 2.7, min 2.7, max 2.7"),
])
def test_summary_edge_cases(tmp_path, capsys, students, expect):
    doc = dict(CLASS, students=students)
    assert cli.main(["summary", str(_write(tmp_path, doc)), "--out", str(tmp_path / "s.png")]) == 0
    assert expect in capsys.readouterr().out
    assert _png_size(tmp_path / "s.png") == (1200, 750)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["parts"][1].update(points=0), "part pool is worth 0 points"),
    (lambda d: d["students"][0]["points"].update(pool=5), "alice has 5 points for part pool (worth 4)"),
    (lambda d: d["students"][1]["points"].update(conv_out=None), "bob (ok) has no points for the auto-graded part conv_out"),
    (lambda d: d["students"][2].update(status="late"), "carol has status 'late'"),
    (lambda d: d["students"].append(dict(d["students"][0])), "alice has two rows"),
    (lambda d: d.update(parts=[]), "lists no parts"),
])
def test_a_malformed_gradebook_is_refused_with_the_reason(tmp_path, capsys, change, message):
    doc = copy.deepcopy(CLASS)
    change(doc)
    assert cli.main(["summary", str(_write(tmp_path, doc))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cvdl: error: ") and message in err
    assert not (tmp_path / "grades-summary.png").exists()


def test_a_csv_without_its_json_is_an_error(tmp_path, capsys):
    (tmp_path / "grades.csv").write_text("student,status\n", encoding="utf-8")
    assert cli.main(["summary", str(tmp_path / "grades.csv")]) == 2
    assert "there is no grades.json beside" in capsys.readouterr().err


# ---------------------------------------------------------------- export

CANVAS_ROSTER = (  # Canvas's gradebook export: Points Possible row, names "Last, First", folder names in SIS Login ID
    "Student,ID,SIS User ID,SIS Login ID,Section,Lab 02 — Convolution layers (4567),Current Score\n"
    "    Points Possible,,,,,8,(read only)\n"
    '"Liddell, Alice",101,S1,alice,Sec A,,\n'
    '"=HYPERLINK(""http://x"")",102,S2,bob,+Sec B,,\n'
    '"Ødegård, Carol",103,S3,carol,Sec A,,\n'
    '"Dent, Dave",104,S4,dave,Sec A,,\n'
    '"Ernst, Erin",105,S5,Erin,Sec A,,\n'
    '"Fox, Frank",106,S6,frank,Sec A,,\n'
    '"Grey, Gina",107,@S7,gina,Sec A,,\n')


def _export(tmp_path, capsys, roster_text, *args):
    roster = tmp_path / "roster.csv"
    roster.write_text(roster_text, encoding="utf-8")
    rc = cli.main(["export", str(_write(tmp_path)), "--roster", str(roster), *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _rows(path):
    data = path.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf"), "no byte-order mark"
    return list(csv.reader(io.StringIO(data.decode("utf-8"))))


def test_canvas_export(tmp_path, capsys):
    rc, out, err = _export(tmp_path, capsys, CANVAS_ROSTER, "--to", "canvas", "--roster-key", "SIS Login ID")
    assert rc == 0
    rows = _rows(tmp_path / "grades-canvas.csv")
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Lab 02 — Convolution layers (4567)"]
    assert rows[1] == ["    Points Possible", "", "", "", "", "8"]
    assert rows[2:] == [
        ["Liddell, Alice", "101", "S1", "alice", "Sec A", "8"],
        ["'=HYPERLINK(\"http://x\")", "102", "S2", "bob", "'+Sec B", "8"],   # formulas escaped
        ["Ødegård, Carol", "103", "S3", "carol", "Sec A", "2.7"],             # after the late penalty
        ["Dent, Dave", "104", "S4", "dave", "Sec A", "4"],
        ["Ernst, Erin", "105", "S5", "Erin", "Sec A", ""],      # not erin: case differs, no grade
        ["Fox, Frank", "106", "S6", "frank", "Sec A", "0"],     # missing: the gradebook's 0
        ["Grey, Gina", "107", "'@S7", "gina", "Sec A", ""],     # no row in the gradebook
    ]
    assert "1 gradebook student(s) not on the roster, NOT exported: erin (the roster has 'Erin'" in err
    assert "2 roster student(s) have no row in the gradebook" in err and "Erin, gina" in err
    assert "1 student(s) have hand-graded parts not marked yet" in err and "dave (essay)" in err
    assert "will not match them: @S7" in err
    assert err.count("cvdl: warning:") == 4, err        # those four, no other (Points Possible is no student)
    assert "7 roster student(s), 5 with a grade" in out and "matches the assignment by its id" in out


def test_canvas_export_names_a_new_assignment_after_the_lab(tmp_path, capsys):
    roster = "Student,ID,SIS Login ID,Section\nA,1,alice,S\nB,2,bob,S\n"
    rc, out, err = _export(tmp_path, capsys, roster, "--to", "canvas", "--roster-key", "SIS Login ID",
                           "--out", str(tmp_path / "c.csv"))
    assert rc == 0
    rows = _rows(tmp_path / "c.csv")
    assert rows[0][-1] == TITLE and rows[1][-1] == "8"
    assert rows[2] == ["A", "1", "", "alice", "S", "8"]          # no SIS User ID in the roster: blank
    assert "NOT exported: carol, dave, erin, frank" in err


def test_moodle_export_uses_the_first_complete_identifier_and_writes_feedback(tmp_path, capsys):
    roster = ("Username,First name,Last name,ID number,Email address\n"
              "alice,Alice,L,,alice@uni.edu\nbob,Bob,B,,\ncarol,Carol,C,,carol@uni.edu\n"
              "dave,Dave,D,,d@uni.edu\nerin,Erin,E,,e@uni.edu\nfrank,Frank,F,,f@uni.edu\n")
    rc, out, err = _export(tmp_path, capsys, roster, "--to", "moodle", "--assignment", "Lab 2")
    assert rc == 0
    rows = _rows(tmp_path / "grades-moodle.csv")
    assert rows[0] == ["Username", "Lab 2", "Feedback"]     # bob has no email: the username it is
    assert rows[1:] == [
        ["alice", "8", "ok; conv_out 2/2; pool 4/4; essay 2/2"],
        ["bob", "8", "ok; conv_out 2/2; pool 4/4; essay 2/2"],
        ["carol", "2.7", "ok; conv_out 2/2; pool 0/4; essay 1/2; 1 day late (-0.3)"],
        ["dave", "4", "ok; conv_out 0/2; pool 4/4; essay not marked"],
        ["erin", "2", "crashed; conv_out 2/2; pool 0/4; essay not marked"],
        ["frank", "0", "missing"],
    ]
    assert "Map from 'Username', Map to 'username'" in out
    assert "dave (essay), erin (essay)" in err and "NOT exported" not in err


def test_moodle_export_needs_an_identifier_for_everyone(tmp_path, capsys):
    rc, _, err = _export(tmp_path, capsys, "Name,Email address\nalice,a@x\nbob,\n", "--to", "moodle")
    assert rc == 2 and "'Email address' is empty for 1" in err
    assert not (tmp_path / "grades-moodle.csv").exists()


@pytest.mark.parametrize("roster, args, message", [
    ("Student,ID,SIS Login ID,Section\nAlice,1,ALICE,S\nBob,2, bob ,S\n", ["--roster-key", "SIS Login ID"],
     "none of the 6 gradebook student(s) is on the roster"),
    ("Student,ID,Section\nalice,1,S\n", ["--roster-key", "sis login id"], "no column 'sis login id'"),
    ("Student,Section\nalice,S\n", [], "has none of these columns"),
    ("Student,ID,Section\nalice,1,S\nalice,2,S\n", [], "lists alice more than once"),
])
def test_canvas_export_errors(tmp_path, capsys, roster, args, message):
    rc, _, err = _export(tmp_path, capsys, roster, "--to", "canvas", *args)
    assert rc == 2 and message in err, err
    assert not (tmp_path / "grades-canvas.csv").exists()


def test_nobody_matched_names_the_near_misses(tmp_path, capsys):
    rc, _, err = _export(tmp_path, capsys, "Student,ID,SIS Login ID,Section\nAlice,1,ALICE,S\n",
                         "--to", "canvas", "--roster-key", "SIS Login ID")
    assert rc == 2 and "alice (the roster has 'ALICE': only case or spaces differ)" in err
