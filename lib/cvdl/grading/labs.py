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
import functools
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
    """``solution``, ``test``, ``manual`` or ``other`` for a cell, from its nbgrader metadata
    (``manual``: nbgrader's "Manually graded answer", ``solution`` and ``grade`` both true)."""
    g = meta(cell)
    if g.get("grade") and g.get("solution"):
        return "manual"
    if g.get("grade"):
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
    """The autograded parts: ``(grade_id, points)`` of every test cell, in order."""
    return [(meta(c)["grade_id"], float(meta(c).get("points", 0))) for c in nb.get("cells", []) if role(c) == "test"]


def manual_parts(nb: dict) -> list[tuple[str, float]]:
    """The parts graded by hand: ``(grade_id, points)`` of every written answer, in order."""
    return [(meta(c)["grade_id"], float(meta(c).get("points", 0))) for c in nb.get("cells", []) if role(c) == "manual"]


def all_parts(nb: dict) -> list[tuple[str, float, str]]:
    """Every part in notebook order: ``(grade_id, points, "auto" | "manual")``."""
    kinds = {"test": "auto", "manual": "manual"}
    return [(meta(c)["grade_id"], float(meta(c).get("points", 0)), kinds[role(c)])
            for c in nb.get("cells", []) if role(c) in kinds]


def validate_solution(nb: dict, name: str = "notebook") -> None:
    """The rules a lab source must follow; raises ``ValueError`` naming the broken one."""
    seen: set[str] = set()
    tagged = False
    for i, cell in enumerate(nb.get("cells", [])):
        g, text, r = meta(cell), source(cell), role(cell)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tagged = True
        if g.get("task"):
            raise ValueError(f"{name}: cell {i} is nbgrader's \"Manually graded task\", which cvdl grade does not "
                             "support (there is no answer cell to show the grader); make it a \"Manually graded "
                             "answer\" (a markdown cell with solution and grade true, and points)")
        if r == "manual":
            if cell.get("cell_type") != "markdown":
                raise ValueError(f"{name}: hand-graded answer {g.get('grade_id')!r} is a code cell; cvdl grade "
                                 "takes written answers only (a markdown cell); code is graded by a test cell")
            if not float(g.get("points", 0)) > 0:
                raise ValueError(f"{name}: hand-graded answer {g.get('grade_id')!r} has no points")
        if r != "other" or g:
            gid = g.get("grade_id")
            if not gid or not re.match(r"^[A-Za-z0-9_-]{1,60}$", str(gid)):
                raise ValueError(f"{name}: cell {i} has nbgrader metadata but a bad grade_id {gid!r}")
            if gid in seen:
                raise ValueError(f"{name}: grade_id {gid!r} is used twice")
            seen.add(gid)
        if r == "solution" and cell.get("cell_type") == "code" and not _regions(text, BEGIN_SOLUTION, END_SOLUTION):
            raise ValueError(f"{name}: solution cell {g.get('grade_id')!r} has no ### BEGIN SOLUTION region")
        if r not in ("solution", "manual") and _regions(text, BEGIN_SOLUTION, END_SOLUTION):
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
    for gid in forbidden(nb):
        if gid not in answers:
            raise ValueError(f"{name}: metadata cvdl.forbidden names {gid!r}, which is not a solution cell")
    for gid, why in answer_violations(nb, answers).items():
        raise ValueError(f"{name}: the solution of {gid!r} {why}")
    _check_not_allowed_notes(nb, name)


NOT_ALLOWED = "*Not allowed in this answer* (the grader checks):"


def _check_not_allowed_notes(nb: dict, name: str) -> None:
    """The line students read above an answer, ``*Not allowed in this answer* (the grader
    checks): `a`, `b`.``, must list exactly the metadata's ``cvdl.forbidden`` names for that answer
    (and be absent where nothing is forbidden): what the lab says is what the grader does."""
    table = ((nb.get("metadata") or {}).get("cvdl") or {}).get("forbidden") or {}
    cells = nb.get("cells", [])
    for i, cell in enumerate(cells):
        if role(cell) != "solution" or cell.get("cell_type") != "code":
            continue
        gid = meta(cell).get("grade_id")
        j, notes = i - 1, []
        while j >= 0 and cells[j].get("cell_type") == "markdown":
            notes += [line for line in source(cells[j]).splitlines() if "Not allowed in this answer" in line]
            j -= 1
        said = set(re.findall(r"`([^`]+)`", notes[0].split(":", 1)[1])) if notes else set()
        want = {str(n) for n in table.get(gid, [])}
        if want and not notes:
            raise ValueError(f"{name}: the lab does not tell students what answer {gid!r} may not use; put "
                             f"'{NOT_ALLOWED} " + ", ".join(f"`{n}`" for n in table[gid]) + ".' in the markdown above it")
        if said != want:
            raise ValueError(f"{name}: above answer {gid!r} the lab says not allowed: {sorted(said)}, but the grader "
                             f"checks {sorted(want)} (metadata cvdl.forbidden)")


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


# Ways to reach code by a name computed at run time, or to run code the check cannot read: no
# graded answer may use them (a lab's answer never needs them), so that a forbidden function
# cannot be reached without being named. See docs/grading.md.
DYNAMIC_NAMES = {"eval", "exec", "compile", "__import__", "globals", "locals", "breakpoint", "exit", "quit",
                 "get_ipython", "__builtins__", "__loader__", "__spec__", "__dict__"}
DYNAMIC_MODULES = ["importlib", "runpy", "inspect", "builtins", "pickle", "_pickle", "cPickle", "marshal",
                   "shelve", "dill", "cloudpickle", "joblib", "copyreg", "ctypes", "cffi", "gc", "types",
                   "code", "codeop", "pydoc", "imp", "pkgutil", "zipimport", "subprocess", "pty", "IPython",
                   "sys.modules", "sys._getframe", "sys.meta_path", "sys.path_hooks", "sys.path_importer_cache",
                   "os.system", "os.popen", "os.execl", "os.execle", "os.execlp", "os.execv", "os.execve",
                   "os.execvp", "os.execvpe", "os.spawnl", "os.spawnv", "os.posix_spawn", "os.posix_spawnp",
                   "operator.attrgetter", "operator.methodcaller", "string.Formatter", "_string", "torch.ops", "torch._C", "torch.jit",
                   "torch.hub", "torch.package", "torch.utils.cpp_extension",
                   # ways to read the runner's own frames and variables, or to run code from a string
                   "traceback", "logging.currentframe", "sys.settrace", "sys.setprofile", "sys.exc_info",
                   "sys.exception", "sys.last_traceback", "sys._current_frames", "threading.settrace",
                   "threading.setprofile", "timeit", "doctest", "pdb", "bdb", "cProfile", "profile", "trace",
                   "tracemalloc", "faulthandler", "signal", "code", "codeop", "pydoc", "site", "readline",
                   "_thread", "threading", "concurrent", "multiprocessing", "asyncio", "os.fork", "os.forkpty",
                   "os.dup", "os.dup2", "os.close", "os.closerange", "os.write", "os.read", "os.open", "os.fdopen",
                   "os.pipe", "os.pwrite", "os.writev", "os.kill", "os.killpg", "fcntl", "socket", "select", "mmap",
                   "sys.stdin", "sys.__stdin__", "io.FileIO"]
ALLOWED_CALLS = {"gc.collect", "types.SimpleNamespace", "types.MappingProxyType"}   # exceptions to the above
ALLOWED_DUNDERS = {"__init__", "__name__", "__doc__", "__call__", "__len__", "__getitem__", "__setitem__",
                   "__iter__", "__next__", "__repr__", "__str__", "__enter__", "__exit__", "__eq__", "__lt__",
                   "__hash__", "__main__", "__version__", "__file__", "__class__", "__qualname__", "__module__",
                   "__slots__", "__annotations__", "__post_init__", "__add__", "__mul__", "__sub__",
                   "__contains__", "__bool__"}
DYNAMIC_ATTRS = {"_ip", "tb_frame", "f_back", "f_locals", "f_globals", "f_builtins", "f_code", "gi_frame", "cr_frame",
                 "ag_frame", "gi_code", "co_code"}   # frames and code objects: the runner's own variables
SAFE_LINE_MAGICS = {"time", "timeit", "precision", "pprint", "pinfo", "pinfo2", "pdoc", "pdef", "who", "whos",
                    "autoreload"}   # (%config runs its line; %matplotlib and %load_ext import modules)
SAFE_WITH_ARGS = {"matplotlib": {"", "inline", "agg", "notebook", "widget", "ipympl"}, "load_ext": {"autoreload"},
                  "reload_ext": {"autoreload"}}
_SAFE_CONFIG = re.compile(r"^InlineBackend\.\w+\s*=\s*(['\"][\w.-]*['\"]|\d+|True|False|\{[\w'\", :.-]*\})$")
SAFE_CELL_MAGICS = {"time", "timeit", "capture"}                                   # their body is Python
_CODE_MAGICS = {"time", "timeit"}  # line magics whose argument is code


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        parts.append(node.func.id + "()")
    else:
        parts.append("?")
    return ".".join(reversed(parts))


class _Info:
    """What one piece of code names: imports, aliases, bindings, loads, attributes, strings, and
    the dynamic means it uses (each a phrase for the reason)."""

    def __init__(self):
        self.imports: list[str] = []
        self.aliases: dict[str, str] = {}   # local name -> module or object path
        self.assigned: dict[str, str] = {}  # local name -> the dotted value it was assigned (m = cvdl)
        self.bound: set[str] = set()
        self.loads: set[str] = set()
        self.dotted: list[str] = []
        self.strings: list[str] = []
        self.dynamic: list[str] = []
        self.stores: list[str] = []         # attribute targets that are assigned (``np.x = ...``)
        self.skip: set[int] = set()         # get_ipython() calls that are the receiver of a safe magic
        self.top: set[str] = set()          # names a top-level def, class or assignment binds (not imports)
        self.called: set[int] = set()       # Name nodes that are the function of a call
        self.computed: list[str] = []       # first arguments of getattr with a computed name
        self.calls: set[str] = set()        # dotted names that are called (gc.collect)
        self.free: set[str] = set()         # names read from the module scope (a function's globals)

    def merge(self, other: "_Info") -> None:
        self.imports += other.imports
        self.aliases.update(other.aliases)
        self.assigned.update(other.assigned)
        self.computed += other.computed
        self.calls |= other.calls
        self.free |= other.free
        self.top |= other.top
        self.bound |= other.bound
        self.loads |= other.loads
        self.dotted += other.dotted
        self.strings += other.strings
        self.dynamic += other.dynamic
        self.stores += other.stores


def _transform(text: str) -> str:
    try:
        from IPython.core.inputtransformer2 import TransformerManager
        return TransformerManager().transform_cell(text)
    except Exception:  # noqa: BLE001 - without IPython, magics are simply not understood
        return text


def _magic_code(line: str) -> str | None:
    """The Python code of a ``%time`` / ``%timeit`` line, its options (``-n1 -r1``, ``-o``) removed;
    None when they cannot be told apart from the code."""
    words = line.strip().split()
    i = 0
    while i < len(words) and words[i].startswith("-"):
        w = words[i]
        if w[1:2] in ("n", "r", "p") and len(w) == 2:   # an option with its value in the next word
            i += 2
        else:
            i += 1
    code = " ".join(words[i:])
    try:
        ast.parse(code)
    except SyntaxError:
        return None
    return code


def _merge_magic_code(info: "_Info", magic: str, line: str, depth: int) -> None:
    """What the code on a ``%time`` / ``%timeit`` line names, or a dynamic use if it is unreadable."""
    code = _magic_code(line)
    if code is None:
        info.dynamic.append(f"{magic} with options the check cannot read")
    else:
        info.merge(_analyse(code, depth + 1))


def _literal(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _analyse(text: str, depth: int = 0) -> _Info:
    """Read ``text`` (a cell, IPython syntax allowed) without running it."""
    info = _Info()
    try:
        tree = ast.parse(_transform(text))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return info   # IPython cannot run it either: nothing it names is used
    if depth > 3:
        info.dynamic.append("magics nested in magics")
        return info
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and _literal(first.value) is not None:
                docstrings.add(id(first.value))
    for stmt in tree.body:   # what the cell defines for other cells (imports are not definitions)
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            info.top.add(stmt.name)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            for sub in ast.walk(stmt):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    info.top.add(sub.id)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and isinstance(node.value, (ast.Name, ast.Attribute)) and "?" not in _dotted(node.value):
            info.assigned[node.targets[0].id] = _dotted(node.value)   # m = cvdl: m is an alias too
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            info.called.add(id(node.func))
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
            info.calls.add(_dotted(node.func))
        if isinstance(node, ast.Import):
            for a in node.names:
                info.imports.append(a.name)
                local = a.asname or a.name.split(".")[0]
                info.aliases[local] = a.name if a.asname else a.name.split(".")[0]
                info.bound.add(local)
        elif isinstance(node, ast.ImportFrom):
            mod = ("." * node.level) + (node.module or "")
            info.imports.append(mod)
            for a in node.names:
                info.imports.append(f"{mod}.{a.name}")
                if a.name == "*":
                    info.dynamic.append(f"from {mod} import *")
                    continue
                info.aliases[a.asname or a.name] = f"{mod}.{a.name}"
                info.bound.add(a.asname or a.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            info.bound.add(node.name)
        elif isinstance(node, ast.arg):
            info.bound.add(node.arg)
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                info.loads.add(node.id)
            else:
                info.bound.add(node.id)
            if node.id in DYNAMIC_NAMES and node.id != "get_ipython":
                info.dynamic.append(node.id)
            if node.id == "get_ipython" and id(node) not in info.called:
                info.dynamic.append("get_ipython passed around as a value")
            if node.id in ("getattr", "setattr", "delattr") and id(node) not in info.called:
                info.dynamic.append(f"{node.id} passed around as a value")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            info.bound.update(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            info.bound.add(node.name)
        elif isinstance(node, ast.Attribute):
            info.dotted.append(_dotted(node))
            own_dict = node.attr == "__dict__" and isinstance(node.value, ast.Name) and node.value.id == "self"
            if (node.attr.startswith("__") and node.attr.endswith("__") and node.attr not in ALLOWED_DUNDERS
                    and not own_dict or node.attr in DYNAMIC_ATTRS):
                info.dynamic.append(f".{node.attr}")
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                info.stores.append(_dotted(node))
        elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and id(node) not in docstrings:
            value = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            if len(value) < 200:
                info.strings.append(value.strip())
            if any(k in value for k in ("/proc/", "/dev/fd", "/dev/mem", "/dev/stdin")):
                info.dynamic.append(f"the path {_short(value.strip(), 40)!r}")
        elif isinstance(node, ast.Call):
            _call(node, info, depth)
    info.free |= _global_loads(tree)
    return info


def _global_loads(tree) -> set[str]:
    """Names read from the module scope: loads at the top level (defaults and decorators
    included) and, inside a function, loads of names the function does not bind itself."""
    out: set[str] = set()

    def bound_in(fn) -> set[str]:
        names = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
        for sub in ast.walk(fn):
            if sub is not fn and isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(sub.name)
            elif isinstance(sub, ast.Name) and not isinstance(sub.ctx, ast.Load):
                names.add(sub.id)
            elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in sub.names)
            elif isinstance(sub, ast.ExceptHandler) and sub.name:
                names.add(sub.name)
        return names

    def visit(node, local: set[str] | None):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for d in list(node.args.defaults) + [d for d in node.args.kw_defaults if d is not None] + \
                    list(getattr(node, "decorator_list", [])):
                visit(d, local)
            inner = bound_in(node) | (local or set())
            for child in (node.body if isinstance(node.body, list) else [node.body]):
                visit(child, inner)
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and (local is None or node.id not in local):
            out.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child, local)

    try:
        visit(tree, None)
    except RecursionError:
        pass
    return out


def _call(node: ast.Call, info: _Info, depth: int) -> None:
    f = node.func
    # magics, as IPython rewrote them: get_ipython().run_line_magic('run', '-m cvdl.conv'), ...
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Call) and isinstance(f.value.func, ast.Name) \
            and f.value.func.id == "get_ipython":
        info.skip.add(id(f.value))
        args = [_literal(a) for a in node.args]
        if f.attr == "run_line_magic" and args and (args[0] in SAFE_LINE_MAGICS or (
                args[0] in SAFE_WITH_ARGS and len(args) > 1 and (args[1] or "").strip() in SAFE_WITH_ARGS[args[0]])
                or args[0] == "config" and len(args) > 1 and _SAFE_CONFIG.match((args[1] or "").strip())):
            if args[0] in _CODE_MAGICS and len(args) > 1 and args[1]:
                _merge_magic_code(info, f"%{args[0]}", args[1], depth)
            return
        if f.attr == "run_cell_magic" and len(args) == 3 and args[0] in SAFE_CELL_MAGICS and args[2] is not None:
            info.merge(_analyse(args[2], depth + 1))
            if args[0] in _CODE_MAGICS and args[1]:
                _merge_magic_code(info, f"%%{args[0]}", args[1], depth)
            return
        what = {"run_line_magic": "%", "run_cell_magic": "%%"}.get(f.attr)
        info.dynamic.append(f"{what}{args[0]}" if what and args and args[0] else
                            "a shell command (!)" if f.attr in ("system", "getoutput") else f"get_ipython().{f.attr}")
        return
    if isinstance(f, ast.Name) and f.id == "get_ipython" and id(node) not in info.skip:
        info.dynamic.append("get_ipython()")
        return
    if isinstance(f, ast.Name) and f.id == "vars":    # vars(module) is its namespace; vars() the cell's
        if node.args:
            info.computed.append(_dotted(node.args[0]))
        else:
            info.dynamic.append("vars()")
        return
    if isinstance(f, ast.Name) and f.id in ("getattr", "setattr", "delattr") and len(node.args) >= 2:
        name = _literal(node.args[1])
        if name is None and f.id == "getattr":   # on a module: reaching what the check cannot read
            info.computed.append(_dotted(node.args[0]))
        elif name is None:          # setattr(parent, name, ...) on a model is fine; on a module it is not
            info.stores.append(f"{_dotted(node.args[0])}.<computed>")
        else:
            target = f"{_dotted(node.args[0])}.{name}"
            info.dotted.append(target)
            if f.id != "getattr":
                info.stores.append(target)


def _resolve(path: str, aliases: dict[str, str]) -> str:
    """``F.conv2d`` → ``torch.nn.functional.conv2d`` through the aliases (and chains of them:
    ``m = cvdl``, ``n = m.art``), then through the course's own modules' imports
    (``cvdl.art.F`` is ``torch.nn.functional``)."""
    for _ in range(8):
        head, _, rest = path.partition(".")
        target = aliases.get(head)
        if target is None:
            break
        new = target + ("." + rest if rest else "")
        if new == path:
            break
        path = new
    return _through_course_modules(path)


_MODULE_ALIASES: dict[str, dict[str, str]] = {}


def _through_course_modules(path: str) -> str:
    """``cvdl.art.nn.Conv2d`` → ``torch.nn.Conv2d``: a name a course module imported is that thing."""
    for _ in range(4):
        parts = path.split(".")
        if parts[0] != "cvdl" or len(parts) < 3:
            return path
        mod, name = parts[1], parts[2]
        if mod not in _MODULE_ALIASES:
            src = Path(__file__).resolve().parents[1] / f"{mod}.py"
            table: dict[str, str] = {}
            try:
                tree = ast.parse(src.read_text())
                for node in tree.body:
                    if isinstance(node, ast.Import):
                        for a in node.names:
                            table[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                        for a in node.names:
                            table[a.asname or a.name] = f"{node.module}.{a.name}"
            except (OSError, SyntaxError):
                pass
            _MODULE_ALIASES[mod] = table
        if name not in _MODULE_ALIASES[mod]:
            return path
        path = ".".join([_MODULE_ALIASES[mod][name]] + parts[3:])
    return path


def _matches(use: str, name: str) -> bool:
    return use == name or use.startswith(name + ".") or use.endswith("." + name) or ("." + name + ".") in use


def _uses(info: _Info, names: list[str], given: _Info) -> list[str]:
    """The forbidden ``names`` that ``info`` uses (its own aliases, then the given cells')."""
    aliases = _aliases(info, given)
    candidates = list(info.imports) + list(info.strings)
    local = info.bound - set(info.aliases) - set(info.assigned)
    for d in info.dotted:      # an attribute of the cell's own object (its function, self) is its own
        if d.split(".")[0] not in local:
            candidates += [d, _resolve(d, aliases)]
    for n in info.loads:
        if n not in info.bound:
            candidates.append(n)
        if n in aliases:                # a module or alias used bare, also as a default: f(refs=refs)
            candidates.append(_resolve(n, aliases))
    hits = []
    for use in candidates:
        for name in names:
            if _matches(use, name) and use not in hits:
                hits.append(use)
    return hits


def _aliases(info: _Info, given: _Info) -> dict[str, str]:
    aliases = dict(given.assigned)
    aliases.update(given.aliases)
    aliases.update(info.assigned)
    aliases.update(info.aliases)
    return aliases


VOIDS = "all parts score 0"   # the phrase that marks a violation voiding the whole submission


def _unknown_imports(info: _Info) -> list[str]:
    """Imported top-level modules that are not installed (relative imports included): a module
    the answer wrote itself, whose code the check cannot read."""
    import importlib.machinery
    import sys
    out = []
    path = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != os.getcwd()]
    for mod in dict.fromkeys(m for m in info.imports):
        top = mod.split(".")[0]
        if mod.startswith("."):
            out.append(mod)
        elif top and top not in sys.builtin_module_names and top not in sys.modules:
            try:
                found = importlib.machinery.PathFinder.find_spec(top, path)
            except (ImportError, ValueError):
                found = None
            if found is None:
                out.append(top)
    return list(dict.fromkeys(out))


def _reaches(path: str, module: str) -> bool:
    """``path`` (``os.sys.modules``) reaches the module ``module`` as an attribute of another
    module — unless that segment is a real submodule of the package before it (``scipy.signal``
    is not the standard ``signal``)."""
    names = path.split(".")
    mod = module.split(".")
    for i in range(1, len(names) - len(mod) + 1):
        if names[i:i + len(mod)] == mod and not _is_submodule(".".join(names[:i + 1])):
            return True
    return False


@functools.lru_cache(maxsize=512)
def _is_submodule(dotted: str) -> bool:
    """``a.b`` is an installed module inside package ``a``: found on disk, importing nothing."""
    import importlib.machinery
    import importlib.util
    head, *rest = dotted.split(".")
    try:
        spec = importlib.util.find_spec(head)   # a top-level name: found, not imported
    except (ImportError, ValueError):
        return False
    places = list(spec.submodule_search_locations or []) if spec else []
    for k, name in enumerate(rest):
        if not name.isidentifier():
            return False
        found = []
        for place in places:
            sub = os.path.join(place, name)
            if os.path.isdir(sub):
                found.append(sub)
            elif k == len(rest) - 1 and any(os.path.isfile(sub + suffix) for suffix in importlib.machinery.all_suffixes()):
                return True
        if not found:
            return False
        places = found
    return bool(rest)


def _dynamic_modules(info: _Info, given: _Info) -> list[str]:
    """Uses of :data:`DYNAMIC_MODULES`, by their real (alias-resolved) module path, also reached
    through another module (``os.sys.modules``)."""
    aliases = _aliases(info, given)
    imported = set(given.aliases) | set(info.aliases)
    allowed = {_resolve(c, aliases) for c in info.calls} & ALLOWED_CALLS
    paths = [(m, True) for m in info.imports]
    paths += [(_resolve(d, aliases), d.split(".")[0] in imported) for d in info.dotted]
    paths += [(_resolve(n, aliases), True) for n in info.loads if n in aliases]
    out = []
    used = {p for p, _ in paths}
    for p, via_import in dict.fromkeys(paths):
        below = {q for q in used if q.startswith(p + ".")}
        if p in allowed or (below and below <= allowed | {q for q in below if any(a.startswith(q + ".") for a in allowed)}
                            and p in info.imports):
            continue   # gc.collect(), types.SimpleNamespace: the module only for what is allowed
        if any(p == m or p.startswith(m + ".") or via_import and _reaches(p, m) for m in DYNAMIC_MODULES):
            out.append(p)
    for target in info.computed:     # getattr(module, computed name)
        head = target.split(".")[0]
        if head in imported or head in aliases and _resolve(head, aliases).split(".")[0] in \
                {a.split(".")[0] for a in list(given.aliases.values()) + list(info.aliases.values())}:
            out.append(f"{target} read by a computed name (getattr, vars)")
    return list(dict.fromkeys(out))


def _modifies_modules(info: _Info, given: _Info) -> list[str]:
    aliases = _aliases(info, given)
    imported = set(given.aliases) | set(info.aliases)
    out = []
    for t in info.stores:
        head = t.split(".")[0]
        if head in imported or (head in aliases and _resolve(head, aliases).split(".")[0] in
                                {a.split(".")[0] for a in list(given.aliases.values()) + list(info.aliases.values())}):
            out.append(t)
    return out


def answer_violations(solution: dict, answers: dict[str, str]) -> dict[str, str]:
    """``{solution grade_id: reason}`` for every answer that uses what its part forbids (the
    notebook's ``cvdl.forbidden`` plus :data:`ALWAYS_FORBIDDEN`), or a way to reach code by a
    computed name (:data:`DYNAMIC_NAMES`, :data:`DYNAMIC_MODULES`, dunder attributes, magics other
    than :data:`SAFE_LINE_MAGICS` / :data:`SAFE_CELL_MAGICS`, shell commands).

    A static check of the source: imports and their aliases (also those made by the lab's given
    cells: ``F`` from ``import torch.nn.functional as F``), attributes, bare names, names as
    strings (``getattr(F, "conv2d")``), the bodies of ``%%time`` / ``%%capture`` cells, and the
    other answer cells an answer calls (``conv2d`` calling a helper defined in another answer is
    checked against ``conv2d``'s list).
    """
    table = forbidden(solution)
    given = _Info()
    answer_ids = set()
    for cell in solution.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        if role(cell) == "solution":
            answer_ids.add(meta(cell).get("grade_id"))
        elif role(cell) == "other":
            given.merge(_analyse(source(cell)))
    infos = {gid: _analyse(text) for gid, text in answers.items() if gid in answer_ids}
    defined_by = {}
    for gid, info in infos.items():
        for n in info.top - given.top - set(given.aliases):
            defined_by.setdefault(n, gid)
    out = {}
    for gid, names in table.items():
        if gid not in infos:
            continue
        info = infos[gid]
        dynamic = list(dict.fromkeys(info.dynamic + _dynamic_modules(info, given)))
        stores = _modifies_modules(info, given)
        unknown = _unknown_imports(info)
        if dynamic:
            out[gid] = (f"uses {', '.join(_short(d) for d in dynamic[:3])}, which no graded answer may use "
                        f"(a way to reach code by a computed name, or the grader's own state): {VOIDS}")
            continue
        if stores:
            out[gid] = f"modifies the module attribute {_short(stores[0])}, which no graded answer may do: {VOIDS}"
            continue
        hits = [_short(h) for h in _uses(info, names, given)] + [f"import {m} (not an installed module)" for m in unknown]
        seen, todo = {gid}, [n for n in info.free - info.top if n in defined_by]
        while todo:                     # helpers defined in other answer cells, called from this one
            other = defined_by[todo.pop()]
            if other in seen:
                continue
            seen.add(other)
            more = _uses(infos[other], names, given)
            hits += [f"{_short(h)} (in answer cell {other!r}, which it calls)" for h in more]
            todo += [n for n in infos[other].free - infos[other].top if n in defined_by]
            if infos[other].dynamic or _dynamic_modules(infos[other], given):
                hits.append(f"a dynamic means (in answer cell {other!r}, which it calls)")
        if hits:
            out[gid] = f"uses {', '.join(hits[:3])}, which this part does not allow"
    return out


def _short(text, n: int = 60) -> str:
    """A student-chosen string, safe to quote in a reason: at most ``n`` characters."""
    text = str(text)
    return text if len(text) <= n else text[:n] + f"… ({len(text)} characters)"


def forbidden_uses(text: str, names: list[str]) -> list[str]:
    """The uses in ``text`` of any of ``names`` (one cell on its own; :func:`answer_violations`
    also follows the lab's given cells and the other answers)."""
    return _uses(_analyse(text), names, _Info())


def make_lab(solution: dict) -> dict:
    """The student version of a solution notebook (a new dict; the input is not modified)."""
    nb = json.loads(json.dumps(solution))
    for cell in nb["cells"]:
        r = role(cell)
        text = source(cell)
        if r in ("solution", "manual"):
            text = clear_solution(text, cell.get("cell_type", "code"))
        elif r == "test":
            text = clear_hidden(text)
        cell["source"] = text
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.get("metadata", {}).pop("celltoolbar", None)
    return nb


def course_root(start: str | os.PathLike | None = None) -> Path:
    """The course the ``cvdl`` commands act on: the nearest folder at or above ``start`` (the
    current directory) that holds ``solutions/`` with notebooks — so a clone acts on itself, not
    on the checkout the package happens to be installed from. Outside any course folder: the
    course this library lives in, if it has ``solutions/``; otherwise a clear error."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "solutions").is_dir() and any((folder / "solutions").glob("*.ipynb")):
            return folder
    own = repo_root()
    if (own / "solutions").is_dir():
        return own
    raise ValueError(f"no course here: neither {here} nor a folder above it holds solutions/*.ipynb "
                     "(run cvdl inside the course's folder, or pass --solutions)")


def solutions_dir() -> Path:
    return Path(os.environ.get("CVDL_SOLUTIONS") or course_root() / "solutions")


def labs_dir() -> Path:
    return course_root() / "labs"


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
        from .nbgrader_course import nbgrader_problems   # nbgrader's own rules, where it is installed
        problems = nbgrader_problems(sol)
        if problems:
            raise ValueError(f"{name}: nbgrader would reject this lab (its metadata validator says: "
                             + "; ".join(problems[:3]) + "); cvdl grade would accept it, so fix it for both")
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
            notes.append(f"answer cell {_short(gid)!r} appears twice; the first one was graded")
            continue
        if cell.get("cell_type") != "code":
            notes.append(f"answer cell {_short(gid)!r} is not a code cell; ignored")
            continue
        answers[gid] = src
    return answers, notes


MAX_WRITTEN = 20_000   # characters of one written answer kept for the instructor


def written_answers(nb: dict, solution: dict) -> dict[str, str]:
    """``{grade_id: text}`` of a submission's hand-graded (markdown) answers, for the parts the
    solution has; the first cell of each id counts; the lab's stub is an empty answer."""
    want = {gid for gid, _ in manual_parts(solution)}
    out: dict[str, str] = {}
    for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
        if not isinstance(cell, dict):
            continue
        gid = meta(cell).get("grade_id")
        if gid in want and gid not in out and cell.get("cell_type") == "markdown":
            raw = cell.get("source", "")
            text = "".join(raw) if isinstance(raw, list) and all(isinstance(t, str) for t in raw) else raw
            text = text if isinstance(text, str) else ""
            out[gid] = "" if text.strip() == TEXT_STUB else text[:MAX_WRITTEN]
    return out


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
                notes.append(f"answer cell {gid!r} is missing from the notebook (graded as not attempted)")
                cells.append({"kind": "code", "source": clear_solution(text), "part": gid})
        elif r == "test":
            cells.append({"kind": "test", "source": text, "part": g["grade_id"],
                          "hidden_blocks": hidden_blocks(text)})
        else:
            cells.append({"kind": "code", "source": text, "part": None})
    return cells, notes
