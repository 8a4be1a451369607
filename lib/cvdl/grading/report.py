"""What happens after ``cvdl grade``: a class summary, and the gradebook in the LMS's import format.

    cvdl summary GRADES [--out FILE.png]
    cvdl export GRADES --to canvas|moodle --roster ROSTER.csv [--roster-key COLUMN]
                [--assignment NAME] [--out FILE]

GRADES is the ``grades.json`` that ``cvdl grade`` writes beside ``grades.csv`` (either path may be
given). What counts where (the figure and the table say it too):

- a part's **pass rate** is the share of students with the part's full points among the
  notebooks that *ran* (``ok``, ``crashed``, ``timed out``); ``missing`` and ``invalid notebook``
  are left out, since none of their parts ran. A hand-graded part counts only the students
  marked so far;
- the **totals** (histogram, mean, median, min, max) are those of every student in the
  gradebook, after late penalties: a ``missing`` student counts with the gradebook's 0.

The export writes one row per roster student, in the roster's order: the gradebook's total (0 for
a ``missing`` row), or a blank cell for a roster student the gradebook has no row for. A blank
replaces a grade already in the LMS (Canvas and Moodle both read it as "no grade"), so the
command names those students. Gradebook students who are not on the roster are not exported and
are named in a warning; when nobody matches, nothing is written and the command fails.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import sys
from pathlib import Path

from .._io import atomic_path, atomic_write_text
from .grade import STATUSES, _cell

RAN = ("ok", "crashed", "timed out")   # statuses whose notebook ran: they count in the pass rates
KINDS = ("auto", "manual")
EPS = 1e-9
CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
CANVAS_IDS = ("ID", "SIS User ID", "SIS Login ID")   # what Canvas matches a row on (then the name)
# Moodle's "Identify user by": the roster's column names for each, the header we write, "Map to"
MOODLE_IDS = ((("email address", "email", "e-mail", "e-mail address"), "Email address", "useremail"),
              (("username", "user name"), "Username", "username"),
              (("id number", "idnumber"), "ID number", "useridnumber"))


# ----------------------------------------------------------------------------------------------
# grades.json
# ----------------------------------------------------------------------------------------------

def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _num(x: float) -> str:
    """A number as a gradebook writes it: at most 4 decimals, no trailing zeros."""
    return f"{x + 0.0:.4f}".rstrip("0").rstrip(".")


def grades_json(path: str | Path) -> Path:
    """The ``grades.json`` for GRADES: the file itself, or the one beside a ``grades.csv``."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return path
    if path.suffix.lower() == ".csv":
        js = path.with_suffix(".json")
        if not js.exists():
            raise ValueError(f"there is no {js.name} beside {path}: the summary and the export read the "
                             f"machine-readable gradebook that cvdl grade writes there (grade again to get it)")
        return js
    raise ValueError(f"{path}: give the grades.csv or grades.json that cvdl grade wrote")


def load_grades(path: str | Path) -> dict:
    """Read and check a ``grades.json`` (see the module docstring); ValueError says what is wrong."""
    js = grades_json(path)
    try:
        doc = json.loads(js.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{js} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"cannot read {js}: {exc}") from None

    def bad(why: str):
        return ValueError(f"{js}: {why}")

    if not isinstance(doc, dict):
        raise bad("not a gradebook (expected a JSON object)")
    for key, kind in (("lab", str), ("title", str), ("parts", list), ("students", list)):
        if not isinstance(doc.get(key), kind):
            raise bad(f"'{key}' is missing or not a {kind.__name__}")
    if not _number(doc.get("max")) or doc["max"] <= 0:
        raise bad(f"'max' must be a number of points above 0, not {doc.get('max')!r}")
    if not doc["parts"]:
        raise bad("the lab lists no parts")
    parts = {}
    for p in doc["parts"]:
        if not isinstance(p, dict) or not isinstance(p.get("id"), str) or not p["id"]:
            raise bad(f"a part without an id: {p!r}")
        if p["id"] in parts:
            raise bad(f"part {p['id']} is listed twice")
        if not _number(p.get("points")) or p["points"] <= 0:
            raise bad(f"part {p['id']} is worth {p.get('points')!r} points: a part must be worth more than 0")
        if p.get("kind") not in KINDS:
            raise bad(f"part {p['id']} has kind {p.get('kind')!r}, not one of {', '.join(KINDS)}")
        parts[p["id"]] = p
    seen = set()
    for s in doc["students"]:
        if not isinstance(s, dict) or not isinstance(s.get("student"), str) or not s["student"]:
            raise bad(f"a student row without a name: {s!r}")
        name = s["student"]
        if name in seen:
            raise bad(f"student {name} has two rows")
        seen.add(name)
        if s.get("status") not in STATUSES:
            raise bad(f"student {name} has status {s.get('status')!r}, not one of {', '.join(STATUSES)}")
        points = s.setdefault("points", {})
        if not isinstance(points, dict):
            raise bad(f"student {name}: 'points' is not an object of part -> points")
        if set(points) - set(parts):
            raise bad(f"student {name}: points for unknown parts {sorted(set(points) - set(parts))}")
        for pid, p in parts.items():
            v = points.setdefault(pid, None)
            if v is None:   # fine for a hand-graded part (not marked yet) or a notebook that did not run
                if p["kind"] == "auto" and s["status"] in RAN:
                    raise bad(f"student {name} ({s['status']}) has no points for the auto-graded part {pid}")
            elif not _number(v) or not -EPS <= v <= p["points"] + EPS:
                raise bad(f"student {name} has {v!r} points for part {pid} (worth {p['points']:g})")
        if not _number(s.get("total")) or s["total"] < -EPS:
            raise bad(f"student {name} has the total {s.get('total')!r}: a number of points, 0 or more")
        if not _number(s.setdefault("penalty", 0.0)) or s["penalty"] < 0:
            raise bad(f"student {name} has the late penalty {s['penalty']!r}: a number of points, 0 or more")
        s["late"] = s.get("late") or ""
        s["reason"] = s.get("reason") or ""
    return doc


# ----------------------------------------------------------------------------------------------
# cvdl summary
# ----------------------------------------------------------------------------------------------

def unmarked(gb: dict) -> dict[str, list[str]]:
    """``student -> hand-graded parts not marked yet``, for the notebooks that ran."""
    manual = [p["id"] for p in gb["parts"] if p["kind"] == "manual"]
    out = {}
    for s in gb["students"]:
        todo = [pid for pid in manual if s["points"][pid] is None]
        if todo and s["status"] in RAN:
            out[s["student"]] = todo
    return out


def summarize(gb: dict) -> dict:
    """The class statistics: per part (``graded`` = the denominator, ``passed``, ``rate``, ``mean``,
    ``unmarked``), the totals (``mean``, ``median``, ``min``, ``max``; None without students) and
    the status counts."""
    ran = [s for s in gb["students"] if s["status"] in RAN]
    parts = []
    for p in gb["parts"]:
        marks = [s["points"][p["id"]] for s in ran]
        graded = [v for v in marks if v is not None]
        passed = sum(v >= p["points"] - EPS for v in graded)
        parts.append(dict(p, graded=len(graded), passed=passed, unmarked=len(marks) - len(graded),
                          rate=passed / len(graded) if graded else None,
                          mean=statistics.fmean(graded) if graded else None))
    totals = [s["total"] for s in gb["students"]]
    return {"parts": parts, "ran": len(ran), "n": len(totals), "totals": totals,
            "mean": statistics.fmean(totals) if totals else None,
            "median": statistics.median(totals) if totals else None,
            "min": min(totals) if totals else None, "max": max(totals) if totals else None,
            "statuses": {st: sum(s["status"] == st for s in gb["students"]) for st in STATUSES},
            "unmarked": unmarked(gb),
            "late": [s for s in gb["students"] if s["penalty"] > EPS]}


RATE_RULE = "full points among the notebooks that ran (ok, crashed, timed out); hand-graded: among those marked"
TOTAL_RULE = "every student in the gradebook, after late penalties; missing = 0"


def summary_text(gb: dict, st: dict) -> str:
    lines = [f"{gb['title']} ({gb['lab']}): {st['n']} student(s), {_num(gb['max'])} points"]
    if not st["n"]:
        return lines[0] + "\nno students in the gradebook"
    lines.append(f"per part — pass rate: {RATE_RULE}")
    if st["ran"]:
        w = max(len("part"), *(len(p["id"]) for p in st["parts"]))
        lines.append(f"  {'part':<{w}}  kind    max  passed   rate   mean")
        for p in st["parts"]:
            if p["rate"] is None:
                cells, note = f"{'-':>6}  {'-':>5}  {'-':>5}", "  not marked yet"
            else:
                cells = f"{p['passed']:>3}/{p['graded']:<2}  {p['rate']:>5.0%}  {p['mean']:>5.2f}"
                note = f"  ({p['unmarked']} not marked)" if p["unmarked"] else ""
                if p["passed"] == 0:
                    note += "  <- nobody passed: check the test"
            lines.append(f"  {p['id']:<{w}}  {p['kind']:<6}  {_num(p['points']):>3}  {cells}{note}")
    else:
        lines.append("  no notebook ran: no pass rates")
    lines.append(f"totals ({TOTAL_RULE}): mean {st['mean']:.2f}, median {_num(st['median'])}, "
                 f"min {_num(st['min'])}, max {_num(st['max'])} (of {_num(gb['max'])})")
    lines.append("statuses: " + ", ".join(f"{n} {s}" for s, n in st["statuses"].items() if n))
    if st["late"]:
        lines.append(f"late: {len(st['late'])} penalized: " +
                     ", ".join(f"{s['student']} ({s['late'] or 'late'}, -{_num(s['penalty'])})" for s in st["late"]))
    if st["unmarked"]:
        lines.append(f"not marked yet ({len(st['unmarked'])} student(s), their totals are provisional): " +
                     ", ".join(f"{name} ({', '.join(todo)})" for name, todo in st["unmarked"].items()))
    return "\n".join(lines)


STATUS_COLORS = {"ok": "#4c9a5b", "crashed": "#c44e52", "timed out": "#dd8452",
                 "invalid notebook": "#8172b3", "missing": "#999999"}


def summary_figure(gb: dict, st: dict):
    """The class-summary figure (a matplotlib Figure, Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 7.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, height_ratios=[1.15, 1])
    ax_p, ax_t, ax_s = fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, :2]), fig.add_subplot(grid[1, 2])
    title = f"{gb['title']} ({gb['lab']}) — {st['n']} student(s), {_num(gb['max'])} points"
    if st["unmarked"]:
        title += f"\n{len(st['unmarked'])} student(s) with hand-graded parts not marked yet: totals provisional"
    fig.suptitle(title, fontsize=13)

    # per-part pass rates, in the lab's order
    ax_p.set_title(f"Pass rate per part: {RATE_RULE}", fontsize=10)
    x = range(len(st["parts"]))
    heights, colors, labels = [], [], []
    for p in st["parts"]:
        if p["rate"] is None:
            height, color, label = 0, "#dddddd", "not marked\nyet" if st["ran"] else ""
        else:
            height = 100 * p["rate"]
            color = "#c44e52" if p["passed"] == 0 else "#4c72b0" if p["kind"] == "auto" else "#dd8452"
            label = (f"{p['rate']:.0%}\n{p['passed']}/{p['graded']}" + ("\nnobody passed" if p["passed"] == 0 else "") +
                     (f"\n({p['unmarked']} not marked)" if p["unmarked"] else ""))
        heights.append(height)
        colors.append(color)
        labels.append(label)
    bars = ax_p.bar(x, heights, color=colors, width=0.7)
    texts = ax_p.bar_label(bars, labels, padding=2, fontsize=9)
    ax_p.set_xticks(list(x), [p["id"] + ("\n(hand-graded)" if p["kind"] == "manual" else "") for p in st["parts"]],
                    rotation=30 if len(st["parts"]) > 8 else 0, fontsize=9)
    for p, text, tick in zip(st["parts"], texts, ax_p.get_xticklabels()):
        if p["rate"] == 0:   # a 0% bar has no height: its label and name in red, to be seen
            text.set(color="#c44e52", fontweight="bold")
            tick.set(color="#c44e52", fontweight="bold")
    ax_p.set_ylim(0, 125)
    ax_p.set_yticks([0, 25, 50, 75, 100])
    ax_p.set_ylabel("students with full points (%)")
    if not st["ran"]:
        ax_p.text(0.5, 0.6, "no notebook ran: no pass rates" if st["n"] else "no students",
                  transform=ax_p.transAxes, ha="center", fontsize=12, color="#555555")

    # totals
    ax_t.set_title(f"Totals: {TOTAL_RULE}", fontsize=10)
    top = gb["max"]
    nbins = max(1, min(20, math.ceil(top)))
    edges = [top * i / nbins for i in range(nbins + 1)]
    came = [min(max(s["total"], 0), top) for s in gb["students"] if s["status"] != "missing"]
    missing = [min(max(s["total"], 0), top) for s in gb["students"] if s["status"] == "missing"]
    ax_t.hist([came, missing], bins=edges, stacked=True, color=["#4c72b0", STATUS_COLORS["missing"]],
              label=[f"submitted ({len(came)})", f"missing ({len(missing)})"], edgecolor="white")
    if st["n"]:
        ax_t.axvline(st["mean"], color="black", linestyle="--", label=f"mean {st['mean']:.2f}")
        ax_t.axvline(st["median"], color="#c44e52", linestyle=":", linewidth=2, label=f"median {_num(st['median'])}")
    else:
        ax_t.text(0.5, 0.5, "no students", transform=ax_t.transAxes, ha="center", fontsize=12, color="#555555")
        ax_t.set_ylim(0, 1)
    ax_t.set_xlim(0, top)
    ax_t.set_xlabel(f"total points (max {_num(top)})")
    ax_t.set_ylabel("students")
    ax_t.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_t.legend(loc="best", fontsize=9)

    # statuses
    ax_s.set_title("Statuses", fontsize=10)
    counts = [st["statuses"][s] for s in STATUSES]
    bars = ax_s.barh(range(len(STATUSES)), counts, color=[STATUS_COLORS[s] for s in STATUSES])
    ax_s.bar_label(bars, [str(c) for c in counts], padding=3, fontsize=9)
    ax_s.set_yticks(range(len(STATUSES)), STATUSES)
    ax_s.invert_yaxis()
    ax_s.set_xlim(0, max(counts + [1]) * 1.2)
    ax_s.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_s.set_xlabel("students")
    return fig


def _summary(args) -> int:
    gb = load_grades(args.grades)
    st = summarize(gb)
    src = Path(args.grades)
    out = Path(args.out) if args.out else src.with_name(f"{src.stem}-summary.png")
    fig = summary_figure(gb, st)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    print(summary_text(gb, st))
    print(f"figure: {out}")
    return 0


# ----------------------------------------------------------------------------------------------
# cvdl export
# ----------------------------------------------------------------------------------------------

def _squash(name: str) -> str:
    return " ".join(name.split()).casefold()


def read_lms_roster(path: str | Path) -> tuple[list[str], list[dict]]:
    """The header and rows of an LMS's roster export (a CSV with a header row). Canvas's
    ``Points Possible`` row is not a student and is left out."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"roster file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the roster file {path}: {exc}") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"roster file {path} is empty")
    header = [h.strip() for h in rows[0]]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup or "" in header:
        raise ValueError(f"roster file {path}: its first row must be a header of distinct column names "
                         f"({'repeated: ' + ', '.join(dup) if dup else 'an empty column name'})")
    records = []
    for i, r in enumerate(rows[1:], start=2):
        if len(r) > len(header):
            raise ValueError(f"roster file {path}: row {i} has {len(r)} cells, the header {len(header)}")
        if r[0].strip() == "Points Possible":
            continue
        records.append(dict(zip(header, r + [""] * (len(header) - len(r)))))
    return header, records


def _column(header: list[str], names) -> str | None:
    """The roster column named one of ``names`` (case and spaces aside)."""
    wanted = {_squash(n) for n in names}
    return next((h for h in header if _squash(h) in wanted), None)


def _feedback(s: dict, parts: list[dict]) -> str:
    """Short feedback: the status, the points per part and the late penalty (no commas)."""
    bits = [s["status"]]
    if s["status"] in RAN:
        for p in parts:
            v = s["points"][p["id"]]
            bits.append(f"{p['id']} " + ("not marked" if v is None else f"{_num(v)}/{_num(p['points'])}"))
    if s["penalty"] > EPS:
        bits.append(f"{s['late'] or 'late'} (-{_num(s['penalty'])})")
    return "; ".join(bits)


def export(gb: dict, header: list[str], roster: list[dict], to: str, key: str | None = None,
           assignment: str | None = None) -> tuple[list[list[str]], list[str], list[str]]:
    """The LMS import file as rows (header first), plus warnings and notes (how to import)."""
    key = key or header[0]
    if key not in header:
        near = [h for h in header if _squash(h) == _squash(key)]
        raise ValueError(f"the roster has no column '{key}'" + (f" (did you mean '{near[0]}'?)" if near else "") +
                         f"; its columns: {', '.join(header)}")
    warnings, notes = [], []
    blank = [r for r in roster if not r[key].strip()]
    if blank:
        warnings.append(f"{len(blank)} roster row(s) have an empty '{key}', left out: " +
                        ", ".join(r[header[0]] or "?" for r in blank))
    roster = [r for r in roster if r[key].strip()]
    keys = [r[key] for r in roster]
    keyset = set(keys)
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"the roster lists {', '.join(dup[:5])} more than once in '{key}'")
    book = {s["student"]: s for s in gb["students"]}
    squashed = {}
    for k in keys:
        squashed.setdefault(_squash(k), k)
    stray = [name for name in book if name not in keyset]

    def hint(name: str) -> str:
        k = squashed.get(_squash(name))
        return f"{name} (the roster has '{k}': only case or spaces differ)" if k else name

    matched = [k for k in keys if k in book]   # exactly: folder names are case-sensitive
    if not matched:
        raise ValueError(f"none of the {len(book)} gradebook student(s) is on the roster (column '{key}', "
                         f"matched exactly): " + (", ".join(hint(n) for n in stray[:10]) or "the gradebook is empty") +
                         "; choose the column that holds the submission folder names with --roster-key")
    if stray:
        warnings.append(f"{len(stray)} gradebook student(s) not on the roster, NOT exported: " +
                        ", ".join(hint(n) for n in stray))
    absent = [k for k in keys if k not in book]
    if absent:
        warnings.append(f"{len(absent)} roster student(s) have no row in the gradebook: a blank grade, which "
                        f"clears a grade they already have in the LMS: " + ", ".join(absent))
    todo = unmarked(gb)
    pending = [k for k in matched if k in todo]
    if pending:
        warnings.append(f"{len(pending)} student(s) have hand-graded parts not marked yet; their grade leaves "
                        f"them out: " + ", ".join(f"{k} ({', '.join(todo[k])})" for k in pending))
    name = assignment or gb["title"]

    def grade(r: dict) -> str:
        s = book.get(r[key])
        return _num(s["total"]) if s else ""

    if to == "canvas":
        cols = {c: _column(header, [c]) for c in CANVAS_COLUMNS}
        if not any(cols[c] for c in CANVAS_IDS):
            raise ValueError("Canvas matches a row on its ID, SIS User ID or SIS Login ID, and the roster has none "
                             "of these columns: use Canvas's own export (Grades → Export) as the roster")
        canvas_ids = [h for h in header if re.fullmatch(re.escape(name) + r" \(\d+\)", h)]
        if canvas_ids:   # the roster is Canvas's export: aim at that exact assignment by its id
            name = canvas_ids[0]
            notes.append(f"assignment column '{name}': the roster's, so Canvas matches the assignment by its id")
        else:
            notes.append(f"assignment column '{name}': Canvas updates the assignment of that exact name, or creates "
                         f"one; to aim at an existing one, pass --assignment 'NAME (ID)' as in Canvas's export")
        rows = [list(CANVAS_COLUMNS) + [name], ["    Points Possible", "", "", "", "", _num(gb["max"])]]
        for r in roster:
            rows.append([r[cols[c]] if cols[c] else (r[key] if c == "Student" else "") for c in CANVAS_COLUMNS] +
                        [grade(r)])
        id_cols = range(1, 4)
        notes.append("import in Canvas: Grades → Import, choose this file, and check the changes Canvas lists "
                     "before it applies them")
    elif to == "moodle":
        choice, why = None, []
        for names, title, mapto in MOODLE_IDS:
            col = _column(header, names)
            if col:
                empty = sum(not r[col].strip() for r in roster)
                if not empty:
                    choice = (col, title, mapto)
                    break
                why.append(f"'{col}' is empty for {empty}")
        if not choice:
            raise ValueError("Moodle identifies a student by email address, username or ID number; the roster has "
                             "no such column filled in for every student" + (f" ({'; '.join(why)})" if why else ""))
        col, title, mapto = choice
        rows = [[title, name, "Feedback"]]
        for r in roster:
            s = book.get(r[key])
            rows.append([r[col], grade(r), _feedback(s, gb["parts"]) if s else ""])
        id_cols = range(0, 1)
        notes.append(f"import in Moodle: Grades → Import → CSV file (encoding UTF-8, separator comma); "
                     f"Identify user by: Map from '{title}', Map to '{mapto}'; Grade item mappings: '{name}' → "
                     f"the lab's grade item, 'Feedback' → its feedback")
    else:
        raise ValueError(f"unknown LMS '{to}': canvas or moodle")
    escaped = [row[i] for row in rows[2 if to == "canvas" else 1:] for i in id_cols if _cell(row[i]) != row[i]]
    if escaped:
        warnings.append("identifier(s) that a spreadsheet would read as formulas were written with a leading "
                        "apostrophe, so the LMS will not match them: " + ", ".join(escaped))
    return [[_cell(c) for c in row] for row in rows], warnings, notes


def _export(args) -> int:
    gb = load_grades(args.grades)
    header, roster = read_lms_roster(args.roster)
    rows, warnings, notes = export(gb, header, roster, args.to, args.roster_key, args.assignment)
    src = Path(args.grades)
    out = Path(args.out) if args.out else src.with_name(f"{src.stem}-{args.to}.csv")
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    atomic_write_text(out, buf.getvalue())   # UTF-8, no byte-order mark: neither LMS needs one
    for w in warnings:
        print(f"cvdl: warning: {w}", file=sys.stderr)
    students = rows[2:] if args.to == "canvas" else rows[1:]
    graded = sum(row[-1 if args.to == "canvas" else 1] != "" for row in students)
    print(f"{out}: {len(students)} roster student(s), {graded} with a grade")
    for n in notes:
        print(n)
    return 0


def add_commands(sub) -> None:
    """Add this module's `cvdl` sub-commands to the argparse sub-parsers ``sub``."""
    ps = sub.add_parser("summary", help="class summary of a gradebook: a figure and a table")
    ps.add_argument("grades", help="the grades.csv (or grades.json) that cvdl grade wrote")
    ps.add_argument("--out", default=None, help="PNG to write (default: GRADES-summary.png beside it)")
    ps.set_defaults(func=_summary)
    pe = sub.add_parser("export", help="the gradebook as an LMS import file (Canvas or Moodle)")
    pe.add_argument("grades", help="the grades.csv (or grades.json) that cvdl grade wrote")
    pe.add_argument("--to", required=True, choices=["canvas", "moodle"], help="the LMS")
    pe.add_argument("--roster", required=True, help="the LMS's roster export (CSV with a header)")
    pe.add_argument("--roster-key", default=None,
                    help="roster column holding the names of the submission folders (default: the first)")
    pe.add_argument("--assignment", default=None, help="the LMS's name of the assignment (default: the lab's title)")
    pe.add_argument("--out", default=None, help="file to write (default: GRADES-canvas.csv / GRADES-moodle.csv)")
    pe.set_defaults(func=_export)
