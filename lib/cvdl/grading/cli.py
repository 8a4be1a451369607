"""The ``cvdl`` command.

    cvdl labs generate [--check]             labs/ from solutions/ (--check: fail if stale)
    cvdl grade LAB DIR --out grades.csv      grade every submission of LAB in DIR
         [--jobs N] [--regrade] [--student NAME] [--timeout S] [--memory MB]
         [--sandbox auto|bwrap|none] [--limits auto|cgroup|watchdog] [--feedback DIR]
         [--roster FILE [--roster-key COLUMN]] [--marks FILE] [--due TIME] [--late-penalty RULE]
         [--times FILE] [--quiet]
    cvdl summary grades.csv                  class summary figure and table
    cvdl export grades.csv --to canvas|moodle --roster FILE   a gradebook the LMS imports
    cvdl nbgrader init COURSE_DIR            an nbgrader course folder from solutions/
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _labs(args) -> int:
    from . import labs
    src = Path(args.solutions).resolve() if args.solutions else labs.solutions_dir()
    dst = Path(args.labs).resolve() if args.labs else (src.parent / "labs" if args.solutions else labs.labs_dir())
    print(f"solutions: {src}\nlabs:      {dst}", file=sys.stderr)
    changed = labs.generate(src, dst, check=args.check)
    if args.check:
        if changed:
            print(f"{dst} is out of date with {src} for: " + ", ".join(changed) +
                  "\nrun: cvdl labs generate", file=sys.stderr)
            return 1
        print(f"{dst} matches {src}")
        return 0
    print(f"regenerated {len(changed)} lab(s) in {dst}: " + ", ".join(changed) if changed else f"{dst} is up to date")
    return 0


def read_roster(path: str, key: str | None = None) -> list[str]:
    """Student names from a roster file: the first column of a CSV (or one name per line), or
    the column headed ``key`` (an LMS export: ``--roster-key "SIS Login ID"``); ``#`` comments
    and blank lines skipped, and a first row that is a header (``student``, ``name``, ``id``,
    ``username``, ``login``, ``email``...) is not a student."""
    import csv
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"roster file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the roster file {path}: {exc}") from None
    rows = [r for r in csv.reader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))]
    if key is not None:
        header = [c.strip() for c in rows[0]] if rows else []
        if key not in header:
            raise ValueError(f"roster file {path} has no column {key!r} (its columns: {', '.join(header)})")
        col = header.index(key)
        rows = [r[col:] for r in rows[1:] if len(r) > col and r[0].strip().lower() != "points possible"]
    names = [r[0].strip() for r in rows if r and r[0].strip()]
    headers = {"student", "students", "name", "names", "id", "student id", "student_id", "sis id", "username",
               "user", "login", "email", "e-mail", "sortable name", "full name"}
    if names and names[0].lower() in headers:
        names = names[1:]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"roster file {path} lists {', '.join(dup[:5])} more than once")
    return names


def _grade(args) -> int:
    from . import grade
    if args.roster_key and not args.roster:
        raise ValueError("--roster-key needs --roster")
    roster = read_roster(args.roster, args.roster_key) if args.roster else None
    opts = grade.Options(timeout=args.timeout, memory_mb=args.memory, jobs=args.jobs,
                         regrade=args.regrade, sandbox=args.sandbox, limits=args.limits, progress=not args.quiet,
                         students=tuple(args.student or ()))
    t0 = time.perf_counter()
    results = grade.grade(args.lab, args.submissions, args.out, opts, feedback=args.feedback,
                          roster=roster, log=lambda m: print(m, file=sys.stderr), marks=args.marks,
                          due=args.due, late_penalty=args.late_penalty, times=args.times)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"graded {len(results)} submission(s) in {time.perf_counter() - t0:.1f} s: " +
          ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; gradebook: {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cvdl", description="course tools: lab generation and grading")
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("labs", help="student labs from solutions/")
    pl.add_argument("action", choices=["generate"])
    pl.add_argument("--check", action="store_true", help="write nothing; exit 1 if labs/ is stale")
    pl.add_argument("--solutions", default=None, help="solutions folder (default: the course's)")
    pl.add_argument("--labs", default=None, help="labs folder (default: the course's)")
    pg = sub.add_parser("grade", help="grade a folder of submissions")
    pg.add_argument("lab", help="01, 01_convolution or a solution notebook path")
    pg.add_argument("submissions", help="folder: STUDENT/LAB.ipynb or STUDENT.ipynb")
    pg.add_argument("--out", required=True, help="gradebook CSV to write")
    pg.add_argument("--feedback", default=None, help="per-student feedback folder (default: OUT-feedback)")
    pg.add_argument("--jobs", type=int, default=max(1, os.cpu_count() or 1),
                    help="submissions graded in parallel (default: the CPU count)")
    pg.add_argument("--regrade", action="store_true", help="grade again what is already graded")
    pg.add_argument("--timeout", type=float, default=None,
                    help="seconds per submission (default: 10 x the solution's own run, at least 60 s)")
    pg.add_argument("--memory", type=int, default=2048, help="MB of memory per submission")
    pg.add_argument("--sandbox", choices=["auto", "bwrap", "none"], default=os.environ.get("CVDL_SANDBOX", "auto"),
                    help="bwrap: require bubblewrap; none: the weaker fallback; auto (default): bwrap if it works")
    pg.add_argument("--limits", choices=["auto", "cgroup", "watchdog"], default=os.environ.get("CVDL_LIMITS", "auto"),
                    help="whole-sandbox limits: cgroup (required), watchdog, or auto (default: a cgroup if "
                         "this machine allows one, else the watchdog)")
    pg.add_argument("--roster", default=None, help="file of student names (first CSV column)")
    pg.add_argument("--roster-key", default=None, metavar="COLUMN",
                    help="the roster's column of submission folder names (an LMS export: e.g. 'SIS Login ID')")
    pg.add_argument("--quiet", action="store_true", help="no progress bar")
    pg.add_argument("--student", action="append", metavar="NAME",
                    help="grade again only this student (repeatable); the others keep their grades")
    pg.add_argument("--marks", default=None, metavar="FILE",
                    help="CSV student,part,points[,comment]: hand-graded parts and overrides, applied on "
                         "every run (default: OUT-marks.csv beside the gradebook, if it exists)")
    pg.add_argument("--due", default=None, metavar="TIME",
                    help="due date, e.g. '2026-12-10 23:59' (local time) or with +01:00 (remembered; 'none' clears)")
    pg.add_argument("--late-penalty", default=None, metavar="RULE",
                    help="10%%/day, 5%%/hour (of the lab's maximum, per day or hour begun), 1/day (points), "
                         "zero, or none (lateness only reported; the default). Remembered")
    pg.add_argument("--times", default=None, metavar="FILE",
                    help="CSV student,submitted[,due]: submission times (and extensions) from the LMS; "
                         "default: nbgrader's timestamp.txt, else the file's modification time. Remembered")
    pl.set_defaults(func=_labs)
    pg.set_defaults(func=_grade)
    from . import nbgrader_course, report   # each adds its commands (set_defaults(func=...))
    nbgrader_course.add_commands(sub)
    report.add_commands(sub)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"cvdl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
