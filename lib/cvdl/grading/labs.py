"""Labs: one source per lab (``solutions/``, nbgrader's format), student versions generated.

A solution notebook marks its cells the way nbgrader does (cell metadata ``nbgrader``):

- *solution* cells (``solution: true``): the answer sits between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION``; the student version gets ``# YOUR CODE HERE`` /
  ``raise NotImplementedError()`` in its place, indented like the marker;
- *test* cells (``grade: true``, ``points``): visible checks, then hidden ones between
  ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``, removed from the student version.

:func:`make_lab` does what ``nbgrader generate_assignment`` does to the cells (``ClearSolutions``,
``ClearHiddenTests``, ``ClearOutput``) without needing nbgrader; ``tests/test_labs.py`` checks
the two agree. ``cvdl labs generate`` (:func:`generate`) rewrites ``labs/`` from ``solutions/``;
``cvdl labs generate --check`` fails when ``labs/`` is stale.

Notebooks are read and written as plain JSON (no nbformat import: it costs ~1 s here), in
nbformat's own layout (``indent=1``, sorted keys) so files round-trip unchanged.
"""
from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

from .._io import atomic_write_text

CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"
BEGIN_SOLUTION, END_SOLUTION = "BEGIN SOLUTION", "END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"


def repo_root() -> Path:
    """The course checkout this library lives in (``lib/cvdl/grading`` → three levels up)."""
    return Path(__file__).resolve().parents[3]


def read_notebook(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def dumps_notebook(nb: dict) -> str:
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_notebook(nb: dict, path: str | os.PathLike) -> None:
    """Write atomically (temporary file, then rename)."""
    atomic_write_text(path, dumps_notebook(nb))


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def meta(cell: dict) -> dict:
    m = cell.get("metadata", {})
    g = m.get("nbgrader", {}) if isinstance(m, dict) else {}
    return g if isinstance(g, dict) else {}


def role(cell: dict) -> str:
    """``solution``, ``test`` or ``other`` for a cell, from its nbgrader metadata."""
    g = meta(cell)
    if g.get("grade") and not g.get("solution"):
        return "test"
    if g.get("solution"):
        return "solution"
    return "other"


def _regions(text: str, begin: str, end: str) -> list[tuple[int, int]]:
    """Line-index pairs (begin marker, end marker) of the delimited regions."""
    out, start = [], None
    for i, line in enumerate(text.split("\n")):
        if begin in line:
            if start is not None:
                raise ValueError(f"nested {begin!r} at line {i + 1}")
            start = i
        elif end in line:
            if start is None:
                raise ValueError(f"{end!r} without {begin!r} at line {i + 1}")
            out.append((start, i))
            start = None
    if start is not None:
        raise ValueError(f"{begin!r} at line {start + 1} is never closed by {end!r}")
    return out


def hidden_blocks(text: str) -> list[tuple[int, int]]:
    return _regions(text, BEGIN_HIDDEN, END_HIDDEN)


def clear_solution(text: str, cell_type: str = "code") -> str:
    """nbgrader's ``ClearSolutions`` on one solution cell."""
    stub = (CODE_STUB if cell_type == "code" else TEXT_STUB).split("\n")
    regions = _regions(text, BEGIN_SOLUTION, END_SOLUTION)
    if not regions:
        return "\n".join(stub)
    lines, out, inside = text.split("\n"), [], False
    starts = {a for a, _ in regions}
    ends = {b for _, b in regions}
    for i, line in enumerate(lines):
        if i in starts:
            indent = re.match(r"\s*", line).group(0)
            out.extend(indent + s for s in stub)
            inside = True
        elif i in ends:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def clear_hidden(text: str) -> str:
    """nbgrader's ``ClearHiddenTests`` on one test cell."""
    drop = set()
    for a, b in hidden_blocks(text):
        drop.update(range(a, b + 1))
    return "\n".join(line for i, line in enumerate(text.split("\n")) if i not in drop)


def parts(nb: dict) -> list[tuple[str, float]]:
    """The graded parts: ``(grade_id, points)`` of every test cell, in order."""
    out = []
    for cell in nb.get("cells", []):
        if role(cell) == "test":
            g = meta(cell)
            out.append((g["grade_id"], float(g.get("points", 0))))
    return out


def validate_solution(nb: dict, name: str = "notebook") -> None:
    """The rules a lab source must follow; raises ``ValueError`` naming the broken one."""
    seen: set[str] = set()
    tagged = False
    for i, cell in enumerate(nb.get("cells", [])):
        g, text, r = meta(cell), source(cell), role(cell)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tagged = True
        if r != "other" or g:
            gid = g.get("grade_id")
            if not gid or not re.match(r"^[A-Za-z0-9_-]{1,60}$", str(gid)):
                raise ValueError(f"{name}: cell {i} has nbgrader metadata but a bad grade_id {gid!r}")
            if gid in seen:
                raise ValueError(f"{name}: grade_id {gid!r} is used twice")
            seen.add(gid)
        if r == "solution" and cell.get("cell_type") == "code" and not _regions(text, BEGIN_SOLUTION, END_SOLUTION):
            raise ValueError(f"{name}: solution cell {g.get('grade_id')!r} has no ### BEGIN SOLUTION region")
        if r != "solution" and _regions(text, BEGIN_SOLUTION, END_SOLUTION):
            raise ValueError(f"{name}: cell {i} has a solution region but is not a solution cell")
        if r == "test":
            if not float(g.get("points", 0)) > 0:
                raise ValueError(f"{name}: test cell {g.get('grade_id')!r} has no points")
            blocks = hidden_blocks(text)
            lines = text.rstrip("\n").split("\n")
            if blocks and blocks[-1][1] != len(lines) - 1:
                raise ValueError(f"{name}: in test cell {g.get('grade_id')!r} the hidden tests must "
                                 "come last (the grader runs the visible checks, then the hidden ones)")
        elif hidden_blocks(text):
            raise ValueError(f"{name}: cell {i} has hidden tests but is not a test cell")
    if not tagged:
        raise ValueError(f"{name}: no cell is tagged 'parameters'")
    answers = {meta(c)["grade_id"]: source(c) for c in nb.get("cells", []) if role(c) == "solution"}
    for gid, names in forbidden(nb).items():
        if gid not in answers:
            raise ValueError(f"{name}: metadata cvdl.forbidden names {gid!r}, which is not a solution cell")
        hits = forbidden_uses(answers[gid], names)
        if hits:
            raise ValueError(f"{name}: the solution of {gid!r} uses what it forbids: {hits}")


# no answer may call the references it is checked against
ALWAYS_FORBIDDEN = ["cvdl.grading", "refs"]


def forbidden(nb: dict) -> dict[str, list[str]]:
    """``{solution grade_id: [names]}``: what each answer may not use — the notebook metadata
    ``cvdl.forbidden`` (the library's own implementation, ...) plus :data:`ALWAYS_FORBIDDEN`."""
    table = ((nb.get("metadata") or {}).get("cvdl") or {}).get("forbidden") or {}
    out = {str(k): [str(n) for n in v] + ALWAYS_FORBIDDEN for k, v in table.items()}
    for cell in nb.get("cells", []):
        if role(cell) == "solution" and meta(cell).get("grade_id"):
            out.setdefault(str(meta(cell)["grade_id"]), list(ALWAYS_FORBIDDEN))
    return out


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "?")
    return ".".join(reversed(parts))


def forbidden_uses(text: str, names: list[str]) -> list[str]:
    """The uses in ``text`` of any of ``names``: imported modules (``cvdl.conv`` also matches
    ``from cvdl import conv``), attributes (``conv2d`` matches ``F.conv2d``) and the same names as
    strings (``getattr(F, "conv2d")``, ``__import__("cvdl.conv")``). A static check: it stops the
    honest shortcut, not a determined obfuscator (see docs/grading.md)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        text = TransformerManager().transform_cell(text)
    except Exception:  # noqa: BLE001 - without IPython, magics are simply not understood
        pass
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    uses: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            uses += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            uses += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Attribute):
            uses.append(_dotted(node))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) < 100:
            uses.append(node.value)
    hits = []
    for use in uses:
        for name in names:
            if use == name or use.startswith(name + ".") or use.endswith("." + name):
                if use not in hits:
                    hits.append(use)
    return hits


def make_lab(solution: dict) -> dict:
    """The student version of a solution notebook (a new dict; the input is not modified)."""
    nb = json.loads(json.dumps(solution))
    for cell in nb["cells"]:
        r = role(cell)
        text = source(cell)
        if r == "solution":
            text = clear_solution(text, cell.get("cell_type", "code"))
        elif r == "test":
            text = clear_hidden(text)
        cell["source"] = text
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.get("metadata", {}).pop("celltoolbar", None)
    return nb


def solutions_dir() -> Path:
    return Path(os.environ.get("CVDL_SOLUTIONS") or repo_root() / "solutions")


def labs_dir() -> Path:
    return repo_root() / "labs"


def generate(src: str | os.PathLike | None = None, dst: str | os.PathLike | None = None,
             check: bool = False) -> list[str]:
    """Write ``dst/NN.ipynb`` for every ``src/NN.ipynb``; return the names that changed.

    ``check=True`` writes nothing (``cvdl labs generate --check``: a stale ``labs/`` is an error).
    Labs without a solution are reported as changed too (they would be deleted).
    """
    src = Path(src) if src else solutions_dir()
    dst = Path(dst) if dst else labs_dir()
    changed = []
    names = sorted(p.name for p in src.glob("*.ipynb"))
    if not names:
        raise ValueError(f"no solution notebooks in {src}")
    if not check:
        dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        sol = read_notebook(src / name)
        validate_solution(sol, name)
        text = dumps_notebook(make_lab(sol))
        target = dst / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            changed.append(name)
            if not check:
                write_notebook(json.loads(text), target)
    for extra in sorted(p.name for p in dst.glob("*.ipynb")) if dst.exists() else []:
        if extra not in names:
            changed.append(extra)
            if not check:
                (dst / extra).unlink()
    return changed


# ----------------------------------------------------------------------------------------------
# Splicing a submission into the instructor's notebook
# ----------------------------------------------------------------------------------------------


class InvalidNotebook(ValueError):
    """The submission is not a notebook we can read."""


def submission_answers(nb) -> tuple[dict[str, str], list[str]]:
    """``{grade_id: source}`` of the solution cells a submission contains, and notes on it.

    Only cells marked as solution cells are taken; everything else in the file is ignored.
    """
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise InvalidNotebook("not a notebook: no list of cells")
    answers: dict[str, str] = {}
    notes: list[str] = []
    for cell in nb["cells"]:
        if not isinstance(cell, dict):
            raise InvalidNotebook("not a notebook: a cell is not an object")
        src = cell.get("source", "")
        if isinstance(src, list) and all(isinstance(s, str) for s in src):
            src = "".join(src)
        if not isinstance(src, str):
            raise InvalidNotebook("not a notebook: a cell's source is not text")
        g = meta(cell)
        if not g.get("solution") or g.get("grade"):
            continue
        gid = g.get("grade_id")
        if not isinstance(gid, str):
            continue
        if gid in answers:
            notes.append(f"solution cell {gid!r} appears twice; the first one was graded")
            continue
        if cell.get("cell_type") != "code":
            notes.append(f"solution cell {gid!r} is not a code cell; ignored")
            continue
        answers[gid] = src
    return answers, notes


def splice(solution: dict, answers: dict[str, str]) -> tuple[list[dict], list[str]]:
    """Cells to execute: the instructor's notebook with the student's answers in its solution
    cells, and its test cells marked as ``test`` (the runner decides what they do).

    Missing answers get the lab's stub (which raises ``NotImplementedError``).
    """
    cells, notes = [], []
    for cell in solution["cells"]:
        if cell.get("cell_type") != "code":
            continue
        r, g, text = role(cell), meta(cell), source(cell)
        if r == "solution":
            gid = g["grade_id"]
            if gid in answers:
                cells.append({"kind": "code", "source": answers[gid], "part": gid})
            else:
                notes.append(f"solution cell {gid!r} is missing from the submission")
                cells.append({"kind": "code", "source": clear_solution(text), "part": gid})
        elif r == "test":
            cells.append({"kind": "test", "source": text, "part": g["grade_id"],
                          "hidden_blocks": hidden_blocks(text)})
        else:
            cells.append({"kind": "code", "source": text, "part": None})
    return cells, notes
