"""nbgrader with these labs: a course folder built from ``solutions/``, and what nbgrader needs.

``cvdl nbgrader init COURSE_DIR`` (:func:`init`) writes nbgrader's layout,
``COURSE_DIR/source/<lab>/<lab>.ipynb`` for each lab, and ``COURSE_DIR/nbgrader_config.py``
(:data:`CONFIG`): the course id, the gradebook, ``CVDL_SMOKE=1`` for the kernels nbgrader starts,
a cell timeout, and two preprocessors of ours in nbgrader's default lists:

- :class:`HideHiddenTests` (``GenerateFeedback``): the feedback shows each test cell without its
  hidden region, and the outputs of a test cell that had hidden tests as one line, passed or
  failed (a traceback would show the source lines around the failing call, and a check's message
  may quote expected values);
- :class:`RestoreHiddenTests` (``Autograde``): nbgrader's ``OverwriteCells``, which already puts
  a test cell's hidden tests back into a submission, but without the "checksum has changed"
  warning it logs for every such cell of every submission (nbgrader issue #1961), so that the
  warning keeps meaning a student edited a locked cell.

:func:`nbgrader_problems` runs nbgrader's own metadata validator on a solution notebook.

nbgrader and nbconvert are imported only when used (they cost ~2 s): the two classes are made on
first access of the module attribute, e.g. ``from cvdl.grading.nbgrader_course import HideHiddenTests``
in the configuration.
"""
from __future__ import annotations

import functools
import json
import shutil
import sys
from pathlib import Path

from . import labs

CONFIG = '''\
# nbgrader's configuration for the cvdl labs, written by `cvdl nbgrader init` (docs/grading.md,
# "With nbgrader"). nbgrader reads it from the folder it is started in: run nbgrader here.
import os
import sys

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, DeduplicateIds, GetGrades, OverwriteKernelspec

# nbgrader must run in a Python that has cvdl installed (the course's virtual environment)
from cvdl.grading.nbgrader_course import HideHiddenTests, RestoreHiddenTests

os.environ["CVDL_SMOKE"] = "1"   # the labs are graded in smoke mode; the kernels nbgrader starts inherit it
# nbgrader runs `alembic` (its database tool) by name: find it next to this Python
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

c = get_config()  # noqa: F821 (nbgrader defines it)
c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")
c.Execute.timeout = {timeout}   # seconds per cell (nbgrader's default: 30)

# nbgrader's default preprocessors, with ours: feedback without the hidden tests, and no
# "checksum has changed" warning for the hidden tests nbgrader itself puts back
c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]
c.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec, RestoreHiddenTests,
                                      CheckCellMetadata]
'''
CELL_TIMEOUT_S = 300
PASSED = "The checks of this part passed."
FAILED = "The checks of this part failed (not shown: they include hidden tests)."


# ----------------------------------------------------------------------------------------------
# nbgrader's metadata validator
# ----------------------------------------------------------------------------------------------


def nbgrader_problems(nb: dict) -> list[str]:
    """What nbgrader's own metadata validator (``nbgrader.nbgraderformat``) finds wrong in a
    solution notebook, one readable line per problem; ``[]`` when nothing (or nbgrader is not
    installed)."""
    try:
        import nbformat
        from nbgrader.nbgraderformat import MetadataValidator, SchemaTooNewError, SchemaTooOldError, ValidationError
    except ImportError:
        return []
    node = nbformat.from_dict(json.loads(json.dumps(nb)))
    validator, problems = MetadataValidator(), []
    for i, cell in enumerate(node.get("cells", [])):
        gid = labs.meta(cell).get("grade_id")
        where = f"cell {i}" + (f" ({gid})" if gid else "")
        try:
            validator.validate_cell(cell)
        except (SchemaTooOldError, SchemaTooNewError) as exc:
            problems.append(f"{where}: {_line(exc)} (`nbgrader update` rewrites old metadata)")
        except ValidationError as exc:
            problems.append(f"{where}: {_line(exc)}")
        except (KeyError, TypeError, AttributeError) as exc:
            problems.append(f"{where}: malformed nbgrader metadata ({type(exc).__name__}: {exc})")
    if not problems:
        try:
            validator.validate_nb(node)   # across cells: duplicate grade ids
        except ValidationError as exc:
            problems.append(_line(exc))
    return problems


def _line(exc: Exception, n: int = 160) -> str:
    """The first line of an error's message, at most ``n`` characters (nbgrader's messages quote the whole cell)."""
    text = str(getattr(exc, "message", exc)).split("\n")[0]
    return text if len(text) <= n else text[:n] + "…"


# ----------------------------------------------------------------------------------------------
# The preprocessors of the configuration
# ----------------------------------------------------------------------------------------------


def _hide_hidden_tests():
    from nbconvert.preprocessors import Preprocessor
    from nbformat.v4 import new_output
    from traitlets import Bool

    class HideHiddenTests(Preprocessor):
        """Feedback without hidden tests: every test cell loses its hidden region; a test cell
        that had one shows one line instead of its outputs, passed or failed (nbgrader's
        verdict: the cell raised or not)."""

        enabled = Bool(True).tag(config=True)

        def preprocess_cell(self, cell, resources, index):
            text = labs.source(cell)
            if labs.role(cell) != "test" or not labs.hidden_blocks(text):
                return cell, resources
            cell.source = labs.clear_hidden(text)
            if cell.cell_type == "code":
                failed = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
                cell.outputs = [new_output("stream", name="stdout", text=(FAILED if failed else PASSED) + "\n")]
            return cell, resources

    return HideHiddenTests


def _restore_hidden_tests():
    from nbgrader import utils
    from nbgrader.api import MissingEntry
    from nbgrader.preprocessors import OverwriteCells

    class RestoreHiddenTests(OverwriteCells):
        """nbgrader's ``OverwriteCells``, quiet where a locked test cell is the release's copy:
        that cell gets its hidden tests back (as ``OverwriteCells`` does) without a warning."""

        def preprocess_cell(self, cell, resources, index):
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid is not None and utils.is_grade(cell) and utils.is_locked(cell):
                try:
                    stored = self.gradebook.find_source_cell(gid, self.notebook_id, self.assignment_id).source
                except MissingEntry:
                    stored = None
                if stored and labs.hidden_blocks(stored) and cell.source == labs.clear_hidden(stored):
                    cell.source = stored
            return super().preprocess_cell(cell, resources, index)

    return RestoreHiddenTests


_LAZY = {"HideHiddenTests": _hide_hidden_tests, "RestoreHiddenTests": _restore_hidden_tests}


@functools.cache
def _lazy(name: str):
    return _LAZY[name]()


def __getattr__(name: str):
    if name in _LAZY:
        return _lazy(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------
# cvdl nbgrader init
# ----------------------------------------------------------------------------------------------


def _select(names: list[str] | None, src: Path) -> list[Path]:
    from .grade import find_lab
    every = sorted(src.glob("*.ipynb"))
    if not every:
        raise ValueError(f"no solution notebooks in {src}")
    return list(dict.fromkeys(find_lab(n, src) for n in names)) if names else every


def init(course_dir: str | Path, lab_names: list[str] | None = None, course_id: str = "cvdl",
         force: bool = False) -> list[Path]:
    """Write the nbgrader course folder; return the files written. Files that exist with other
    content are overwritten only with ``force``; nothing else in the folder (the gradebook,
    release/, submitted/, ...) is touched."""
    src = labs.solutions_dir()
    course = Path(course_dir).resolve()
    if course.exists() and not course.is_dir():
        raise ValueError(f"{course} is not a folder")
    files: dict[Path, bytes] = {}
    for sol in _select(lab_names, src):
        nb = labs.read_notebook(sol)
        labs.validate_solution(nb, sol.name)
        problems = nbgrader_problems(nb)
        if problems:
            raise ValueError(f"{sol.name}: nbgrader would refuse it: " + "; ".join(problems))
        files[course / "source" / sol.stem / sol.name] = sol.read_bytes()
    files[course / "nbgrader_config.py"] = CONFIG.format(course_id=course_id, timeout=CELL_TIMEOUT_S).encode()
    clash = [str(p.relative_to(course)) for p, data in files.items() if p.exists() and p.read_bytes() != data]
    if clash and not force:
        raise ValueError(f"{course} already has other versions of: {', '.join(clash)}; pass --force to overwrite "
                         "these files (the gradebook and the other folders are never touched)")
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return list(files)


def _missing_kernels(notebooks: list[Path]) -> list[str]:
    """The kernels the notebooks ask for that this Python's Jupyter does not have."""
    try:
        from jupyter_client.kernelspec import find_kernel_specs
    except ImportError:
        return []
    want = {labs.read_notebook(p).get("metadata", {}).get("kernelspec", {}).get("name") for p in notebooks}
    return sorted(k for k in want - set(find_kernel_specs()) if k)


def _init(args) -> int:
    src, here = labs.solutions_dir(), labs.course_root()
    print(f"course:    {here}\nsolutions: {src}", file=sys.stderr)
    written = init(args.course_dir, args.labs, args.course_id, args.force)
    course = Path(args.course_dir).resolve()
    notebooks = [p for p in written if p.suffix == ".ipynb"]
    stems = [p.stem for p in notebooks]
    print(f"nbgrader course: {course}\n  source/: {', '.join(stems)}\n  nbgrader_config.py: course id "
          f"{args.course_id!r}, gradebook {course / 'gradebook.db'}, CVDL_SMOKE=1, {CELL_TIMEOUT_S} s per cell")
    for kernel in _missing_kernels(notebooks):
        print(f"warning: the labs' kernel {kernel!r} is not installed for this Python (nbgrader runs the labs "
              "in it): run `make kernel` in the course", file=sys.stderr)
    if shutil.which("nbgrader") is None:
        print("warning: nbgrader is not on PATH: activate the course's environment (source .venv/bin/activate)",
              file=sys.stderr)
    lab = stems[0]
    print(f"next (docs/grading.md, \"With nbgrader\"):\n  cd {course}\n  nbgrader generate_assignment {lab}\n"
          f"  # hand out release/{lab}/; submissions go to submitted/STUDENT/{lab}/{lab}.ipynb (nbgrader collect)\n"
          f"  nbgrader autograde {lab}\n  nbgrader generate_feedback {lab}\n"
          f"  cd {here} && cvdl grade {lab} {course / 'submitted'} --out {course / 'cvdl-grades.csv'}"
          "   # sandboxed, forbidden names enforced")
    return 0


def add_commands(sub) -> None:
    """Add this module's `cvdl` sub-commands to the argparse sub-parsers ``sub``."""
    p = sub.add_parser("nbgrader", help="an nbgrader course folder from solutions/")
    actions = p.add_subparsers(dest="action", required=True)
    pi = actions.add_parser("init", help="write COURSE_DIR/source/<lab>/<lab>.ipynb and nbgrader_config.py")
    pi.add_argument("course_dir", help="the nbgrader course folder (created if needed)")
    pi.add_argument("--labs", nargs="+", default=None, help="labs to include: 01 02 or 01_convolution (default: all)")
    pi.add_argument("--course-id", default="cvdl", help="nbgrader's course id (default: cvdl)")
    pi.add_argument("--force", action="store_true", help="overwrite files of an earlier init (never the gradebook)")
    pi.set_defaults(func=_init)
