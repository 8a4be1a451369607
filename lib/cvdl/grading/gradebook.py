"""What the instructor adds to the automatic grades, and what ``cvdl grade`` writes from them.

The automatic grade of a submission (a :class:`cvdl.grading.grade.Result`, kept in the state
folder) never changes unless the submission or the lab does. On top of it, every run applies:

- **marks** (``--marks FILE``, default ``<gradebook>-marks.csv`` when it exists): rows
  ``student, part, points[, comment]``: the points of a hand-graded part, or an override of an
  autograded part's points (the feedback says so, with the comment);
- **a due date and a late rule** (``--due``, ``--late-penalty``, remembered between runs): the
  submission time comes from ``--times FILE`` (``student, submitted[, due]``: the LMS's times, and
  per-student extensions), else nbgrader's ``timestamp.txt`` beside the notebook, else the file's
  modification time (said in the feedback: a copy can change it).

From both it writes the gradebook (``grades.csv`` for people, ``grades.json`` for tools: ``cvdl
summary``, ``cvdl export``), one feedback file per student (``.txt`` and ``.html``) and, for a lab
with hand-graded parts, the written answers (``<gradebook>-manual/PART.html``) and a marks
template to fill in.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .._io import atomic_write_text

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> str:
    """A CSV cell a spreadsheet shows as text: no control characters, and a leading ``=``, ``+``,
    ``-`` or ``@`` (a formula, in Excel or LibreOffice) escaped with an apostrophe."""
    text = "".join(ch if ch >= " " or ch == "\t" else " " for ch in str(value)).replace("\t", " ")
    return "'" + text if text.startswith(_FORMULA) else text


# ----------------------------------------------------------------------------------------------
# Times and the late rule
# ----------------------------------------------------------------------------------------------


def parse_time(text: str, what: str = "time") -> datetime:
    """An ISO date-time (``2026-12-10 23:59``, ``2026-12-10T23:59:00+01:00``, nbgrader's
    ``2026-12-10 23:12:00.123456 UTC``); without a zone, the machine's local time."""
    t = str(text).strip()
    t = re.sub(r"\s*(UTC|GMT|Z)$", "+00:00", t)
    try:
        d = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a date and time such as 2026-12-10 23:59 or "
                         "2026-12-10T23:59:00+01:00") from None
    return d if d.tzinfo else d.astimezone()


@dataclass(frozen=True)
class LateRule:
    """``10%/day`` (of the lab's maximum, per day or part of a day late), ``5%/hour``,
    ``1/day`` (points), ``zero`` (a late submission scores 0), ``none`` (lateness only reported)."""

    text: str
    amount: float = 0.0
    percent: bool = True
    unit_s: float = 86400.0
    zero: bool = False

    @classmethod
    def parse(cls, text: str) -> "LateRule":
        t = str(text).strip().lower().replace(" ", "")
        if t in ("none", "0", ""):
            return cls("none")
        if t == "zero":
            return cls("zero", zero=True)
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(%?)/(day|hour)", t)
        if not m:
            raise ValueError(f"late penalty {text!r} is not one of: 10%/day, 5%/hour, 1/day (points), zero, none")
        return cls(t, float(m.group(1)), m.group(2) == "%", 86400.0 if m.group(3) == "day" else 3600.0)

    def penalty(self, late_s: float, max_total: float) -> float:
        if late_s <= 0 or self.text == "none":
            return 0.0
        if self.zero:
            return math.inf
        units = math.ceil(late_s / self.unit_s - 1e-9)
        per = self.amount / 100 * max_total if self.percent else self.amount
        return units * per


def _span(seconds: float) -> str:
    d, rest = divmod(int(round(seconds)), 86400)
    h, rest = divmod(rest, 3600)
    m = rest // 60
    parts = [f"{d} day{'s' * (d != 1)}"] * bool(d) + [f"{h} h"] * bool(h) + [f"{m} min"] * bool(m and not d)
    return " ".join(parts) or f"{int(round(seconds))} s"


def read_times(path: str | os.PathLike) -> dict[str, tuple[datetime, datetime | None]]:
    """``student -> (submitted, own due date or None)`` from a CSV ``student, submitted[, due]``
    (a header row is skipped when its second cell is not a time)."""
    rows = _read_csv(path, "submission times")
    out: dict = {}
    for n, row in enumerate(rows, 1):
        if len(row) < 2 or not row[0].strip():
            raise ValueError(f"submission times {path}, row {n}: want student, submitted[, due]")
        if n == 1:
            try:
                parse_time(row[1])
            except ValueError:
                continue   # a header
        due = parse_time(row[2], f"{path}, row {n}: due") if len(row) > 2 and row[2].strip() else None
        out[row[0].strip()] = (parse_time(row[1], f"{path}, row {n}: submitted"), due)
    return out


def file_time(notebook: Path | None) -> tuple[str, str]:
    """``(ISO time, source)`` of a submission: nbgrader's ``timestamp.txt`` beside it, else the
    notebook's modification time; ``("", "")`` without a notebook."""
    if notebook is None:
        return "", ""
    stamp = notebook.parent / "timestamp.txt"
    try:
        if stamp.is_file() and not stamp.is_symlink() and stamp.stat().st_size < 200:
            return parse_time(stamp.read_text().strip()).isoformat(), "nbgrader's timestamp.txt"
    except (OSError, ValueError):
        pass
    try:
        st = os.lstat(notebook)
    except OSError:
        return "", ""
    return datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(), "the file's modification time"


# ----------------------------------------------------------------------------------------------
# Marks
# ----------------------------------------------------------------------------------------------


def _read_csv(path, what: str) -> list[list[str]]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"{what} file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the {what} file {path}: {exc}") from None
    return [r for r in csv.reader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))]


def read_marks(path: str | os.PathLike, parts: dict[str, float]) -> dict[tuple[str, str], tuple[float, str]]:
    """``(student, part) -> (points, comment)`` from a CSV ``student, part, points[, comment]``
    (a header row ``student, part, ...`` skipped; a row with empty points is no mark). A part must
    be one of ``parts`` and the points within ``[0, max]``, or the whole file is refused."""
    marks: dict = {}
    for n, row in enumerate(_read_csv(path, "marks"), 1):
        row = [c.strip() for c in row] + ["", "", ""]
        student, part, pts, comment = row[:4]
        if n == 1 and student.lower() == "student" and part.lower() == "part":
            continue
        if not pts:
            continue
        if part not in parts:
            raise ValueError(f"marks {path}, row {n}: part {part!r} is not a part of this lab "
                             f"({', '.join(parts)})")
        try:
            value = float(pts.lstrip("'"))
        except ValueError:
            raise ValueError(f"marks {path}, row {n}: points {pts!r} is not a number") from None
        if not (0 <= value <= parts[part]):
            raise ValueError(f"marks {path}, row {n}: {value:g} points for {part!r}, whose maximum is {parts[part]:g}")
        if (student, part) in marks:
            raise ValueError(f"marks {path}: {student!r} has two marks for {part!r}")
        marks[(student, part)] = (value, comment)
    return marks


@dataclass
class Policy:
    """What the instructor adds to the automatic grades (see the module docstring)."""

    marks: dict = field(default_factory=dict)     # (student, part) -> (points, comment)
    marks_path: str = ""
    due: datetime | None = None
    rule: LateRule = field(default_factory=lambda: LateRule("none"))
    times: dict = field(default_factory=dict)     # student -> (submitted, own due or None)
    times_path: str = ""


@dataclass
class Row:
    """One student's final grade: the automatic points with the marks and the late penalty applied."""

    points: dict          # part -> points, or None for a hand-graded part not marked yet
    penalty: float
    total: float
    submitted: str        # ISO time or ''
    late: str             # '' or "2 days 3 h late"
    notes: list           # lines for the feedback: overrides, marks, lateness
    comments: dict        # part -> the instructor's comment


def final(res, all_parts: list[tuple[str, float, str]], policy: Policy) -> Row:
    """Apply ``policy`` to one automatic result (``res``: a ``grade.Result``)."""
    points: dict = {}
    notes: list[str] = []
    comments: dict = {}
    for gid, pts, kind in all_parts:
        auto = res.points.get(gid, 0.0) if kind == "auto" else None
        mark = policy.marks.get((res.student, gid))
        if mark is not None:
            points[gid] = mark[0]
            if mark[1]:
                comments[gid] = mark[1]
            if kind == "auto" and mark[0] != auto:
                notes.append(f"{gid}: {mark[0]:g}/{pts:g} set by the instructor (the automatic grade was "
                             f"{auto:g})" + (f": {mark[1]}" if mark[1] else ""))
        else:
            points[gid] = auto
    earned = sum(p for p in points.values() if p is not None)
    max_total = sum(p for _, p, _ in all_parts)
    submitted, late, penalty = "", "", 0.0
    when, due = None, policy.due
    if res.student in policy.times:
        when, own = policy.times[res.student]
        due = own or due
        source = f"the submission times ({Path(policy.times_path).name})"
    elif res.submitted:
        when, source = datetime.fromisoformat(res.submitted), res.time_source
    if when is not None and res.status != "missing":
        submitted = when.isoformat(timespec="seconds")
        if due is not None and when > due:
            late_s = (when - due).total_seconds()
            late = f"{_span(late_s)} late"
            penalty = min(earned, policy.rule.penalty(late_s, max_total))
            notes.append(f"submitted {when:%Y-%m-%d %H:%M %Z}, {late} (due {due:%Y-%m-%d %H:%M %Z}; time from "
                         f"{source})" + (f": −{penalty:g} points ({policy.rule.text})" if penalty else
                                         " (no penalty)" if policy.rule.text == "none" else ""))
    total = round(max(0.0, earned - penalty), 6)
    return Row(points, round(penalty, 6), total, submitted, late, notes, comments)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def write(out: Path, results: list, key, policy: Policy) -> dict:
    """``out`` (CSV) and ``out.with_suffix('.json')``; returns ``{student: Row}``."""
    parts = key.all_parts
    rows = {r.student: final(r, parts, policy) for r in results}
    max_total = sum(p for _, p, _ in parts)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["student", "status"] + [gid for gid, _, _ in parts] +
               ["late_penalty", "total", "max", "submitted", "reason", "limits"])
    doc = {"lab": key.lab, "title": key.title, "max": max_total,
           "parts": [{"id": gid, "points": pts, "kind": kind} for gid, pts, kind in parts],
           "due": policy.due.isoformat() if policy.due else None,
           "late_rule": policy.rule.text if policy.rule.text != "none" else None, "students": []}
    for r in sorted(results, key=lambda r: r.student):
        row = rows[r.student]
        reason = r.reason + (f"; {row.late}" if row.late else "") + \
            ("; override: " + ", ".join(n.split(":")[0] for n in row.notes if "set by the instructor" in n)
             if any("set by the instructor" in n for n in row.notes) else "")
        w.writerow([cell(r.student), r.status] +
                   ["" if row.points[gid] is None else f"{row.points[gid]:g}" for gid, _, _ in parts] +
                   [f"{row.penalty:g}", f"{row.total:g}", f"{max_total:g}", row.submitted, cell(reason), cell(r.limits)])
        doc["students"].append({"student": r.student, "status": r.status, "points": row.points,
                                "penalty": row.penalty, "total": row.total, "submitted": row.submitted or None,
                                "late": row.late, "reason": reason})
    atomic_write_text(out, buf.getvalue())
    atomic_write_text(out.with_suffix(".json"), json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return rows


def _part_lines(d: dict) -> list[str]:
    head = f"{d['part']}: {d['points']:g}/{d['max']:g}"
    if d["state"] == "passed":
        return [head + " — all checks passed"]
    if d["state"] == "not attempted":
        return [head + " — not attempted (the answer still raises NotImplementedError)"]
    if d["state"] == "not graded":
        return [head + f" — not graded: {d.get('why', '')}"]
    if d["state"] == "banned":
        return [head + f" — {d.get('why', '')}"]
    out = [head]
    if d.get("checks"):
        out.append("    points per check: " + ", ".join(f"{n} {e:g}/{p:g}" for n, e, p in d["checks"]))
    if d["failed"]:
        out.append("    visible checks failed:")
        out += [f"      {f}" for f in d["failed"][:5]]
    if d.get("hidden"):
        out.append(f"    hidden checks: {d['hidden'][0]} of {d['hidden'][1]} passed")
    out += [f"    hint: {h}" for h in d.get("hints", [])]
    return out


def feedback_text(res, row: Row, key) -> str:
    """The feedback a student reads (plain text)."""
    lines = [f"lab {key.lab} — feedback for {res.student}", "",
             f"status: {res.status}" + (f" — {res.stopped}" if res.status != "ok" and res.stopped else ""),
             f"score: {row.total:g} / {sum(p for _, p, _ in key.all_parts):g}"]
    if res.status in ("missing", "invalid notebook"):
        return "\n".join(lines + [res.reason] + [""] + row.notes)
    details = {d["part"]: d for d in res.details}
    lines.append("")
    for gid, pts, kind in key.all_parts:
        if kind == "manual":
            p = row.points.get(gid)
            lines.append(f"{gid}: " + ("not marked yet (graded by hand)" if p is None else f"{p:g}/{pts:g} — marked by hand")
                         + (f": {row.comments[gid]}" if gid in row.comments else ""))
        elif gid in details:
            d = dict(details[gid], points=row.points.get(gid, details[gid]["points"]))
            lines += _part_lines(d)
            if gid in row.comments and not any(n.startswith(f"{gid}:") for n in row.notes):
                lines.append(f"    the instructor: {row.comments[gid]}")
    if res.errors:
        lines += ["", "errors while running your notebook:"] + [f"  {e}" for e in res.errors]
    notes = row.notes + res.notes
    if notes:
        lines += ["", "notes:"] + [f"  {n}" for n in notes]
    return "\n".join(lines)


def feedback_html(text: str, title: str) -> str:
    """The same feedback as a small self-contained HTML page (escaped: every line is the student's
    or the grader's text, never markup)."""
    rows = []
    for line in text.split("\n"):
        cls = ("ok" if "all checks passed" in line or re.search(r": (\d+(\.\d+)?)/\1 —", line) else
               "bad" if re.search(r"^\S+: 0/", line) or line.startswith("status: ") and "status: ok" not in line else
               "head" if line and not line.startswith(" ") and line.endswith(":") else "")
        rows.append(f'<div class="{cls}">{html.escape(line) or "&nbsp;"}</div>')
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title>\n"
            "<style>body{font:15px/1.45 system-ui,sans-serif;max-width:52em;margin:2em auto;padding:0 1em}"
            "div{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:14px}"
            ".ok{color:#1a7f37}.bad{color:#b3261e;font-weight:600}.head{font-weight:600;margin-top:.4em}"
            "div:first-child{font:600 20px system-ui,sans-serif;margin-bottom:.5em}</style></head><body>\n"
            + "\n".join(rows) + "\n</body></html>\n")


def write_written(folder: Path, results: list, key, rows: dict) -> list[Path]:
    """For each hand-graded part, a page of every student's written answer, and
    ``marks-template.csv`` (one row per student and part, with the marks given so far)."""
    manual = [(gid, pts) for gid, pts, kind in key.all_parts if kind == "manual"]
    if not manual:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for gid, pts in manual:
        blocks = []
        for r in sorted(results, key=lambda r: r.student):
            text = (r.written or {}).get(gid)
            mark = rows[r.student].points.get(gid)
            blocks.append(f"<h2>{html.escape(r.student)} <small>({'not marked' if mark is None else f'{mark:g}/{pts:g}'})"
                          f"</small></h2>\n<pre>{html.escape(text) if text else '<em>no answer</em>'}</pre>")
        page = folder / f"{gid}.html"
        atomic_write_text(page, f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(key.lab)}: "
                                f"{html.escape(gid)}</title><style>body{{font:15px/1.45 system-ui,sans-serif;max-width:52em;"
                                "margin:2em auto}pre{white-space:pre-wrap;background:#f6f6f6;padding:.7em}</style>"
                                f"</head><body>\n<h1>{html.escape(key.lab)} — {html.escape(gid)} ({pts:g} points), "
                                "written answers</h1>\n" + "\n".join(blocks) + "\n</body></html>\n")
        written.append(page)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["student", "part", "points", "comment"])
    for r in sorted(results, key=lambda r: r.student):
        for gid, _ in manual:
            p = rows[r.student].points.get(gid)
            w.writerow([cell(r.student), gid, "" if p is None else f"{p:g}", cell(rows[r.student].comments.get(gid, ""))])
    atomic_write_text(folder / "marks-template.csv", buf.getvalue())
    return written + [folder / "marks-template.csv"]
