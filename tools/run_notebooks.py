#!/usr/bin/env python
"""Execute notebooks headless with papermill and write a report of times and results.

    python tools/run_notebooks.py --full                    # every notebook, default (full) settings
    python tools/run_notebooks.py --smoke notebooks/01_*.ipynb

Executed copies go to ``results/runs/`` (not committed); the report (Markdown) lists each
notebook's wall time, status, and the headline results it recorded with ``cvdl.record``.
The tests (``tests/test_notebooks.py``) use :func:`execute` from here, so there is one way to
run a notebook.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    notebook: str
    mode: str
    seconds: float = 0.0
    status: str = "not run"
    error: str = ""
    results: list[dict] = field(default_factory=list)


def execute(notebook: Path, out: Path, smoke: bool, cell_timeout: int, kernel: str = "python3",
            extra_params: dict | None = None, arrays_dir: Path | None = None) -> Run:
    """Run one notebook with papermill; never raises for a failing notebook (see ``Run.status``).

    ``arrays_dir``: where the notebook's figures save the arrays they show (``CVDL_ARRAYS_DIR``).
    """
    import papermill as pm

    run = Run(str(notebook.relative_to(ROOT) if notebook.is_absolute() else notebook),
              "smoke" if smoke else "full")
    params = dict(extra_params or {})
    if smoke:
        params["SMOKE"] = True
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, results_file = tempfile.mkstemp(prefix="cvdl-results-", suffix=".jsonl")
    os.close(fd)
    old = {k: os.environ.get(k) for k in ("CVDL_RESULTS_FILE", "CVDL_SMOKE", "CVDL_ARRAYS_DIR")}
    os.environ["CVDL_RESULTS_FILE"] = results_file
    if arrays_dir is not None:
        os.environ["CVDL_ARRAYS_DIR"] = str(arrays_dir)
    else:
        os.environ.pop("CVDL_ARRAYS_DIR", None)
    os.environ["CVDL_SMOKE"] = "1" if smoke else "0"
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(notebook), str(out), parameters=params, kernel_name=kernel,
                            cwd=str(notebook.parent), progress_bar=False, log_output=False,
                            execution_timeout=cell_timeout, start_timeout=180)
        run.status = "ok"
    except Exception as err:  # PapermillExecutionError carries the failing cell's traceback
        run.status = "failed"
        ename = getattr(err, "ename", type(err).__name__)
        evalue = getattr(err, "evalue", str(err))
        cell = getattr(err, "exec_count", None)
        run.error = f"{ename}: {evalue}" + (f" (cell [{cell}])" if cell is not None else "")
    finally:
        run.seconds = time.perf_counter() - start
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        with open(results_file, encoding="utf-8") as f:
            run.results = [json.loads(line) for line in f if line.strip()]
        os.remove(results_file)
    return run


def markdown_report(runs: list[Run], title: str) -> str:
    import torch

    import cvdl

    lines = [f"# {title}", "",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores; device: "
             f"{cvdl.describe_device()}",
             f"- python {platform.python_version()}, torch {torch.__version__}",
             "- wall time includes kernel start; notebooks run one after another",
             "", "| notebook | mode | time (s) | status | results |", "|---|---|---:|---|---|"]
    for r in runs:
        res = "<br>".join(f"{x['name']}: {x['text']}" for x in r.results) or "—"
        status = r.status if not r.error else f"{r.status}: {r.error[:200]}"
        lines.append(f"| {r.notebook} | {r.mode} | {r.seconds:.1f} | {status} | {res} |")
    lines.append(f"| **total** | | {sum(r.seconds for r in runs):.1f} | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="default (full-quality) parameters [default]")
    mode.add_argument("--smoke", action="store_true", help="SMOKE=True: seconds per notebook")
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    ap.add_argument("--out", type=Path, default=None, help="Markdown report (default: results/<mode>_run.md)")
    ap.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell (default 1800 full, 120 smoke)")
    ap.add_argument("--kernel", default="python3")
    args = ap.parse_args(argv)
    smoke = args.smoke
    nbs = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in nbs if not Path(p).is_file()]
    if missing:
        ap.error(f"no such notebook(s): {', '.join(missing)}")
    timeout = args.cell_timeout or (120 if smoke else 1800)
    mode_name = "smoke" if smoke else "full"
    out = args.out or ROOT / "results" / f"{mode_name}_run.md"
    runs = []
    for nb in nbs:
        nb = Path(nb).resolve()
        print(f"running {nb.name} ({mode_name}) ...", flush=True)
        run = execute(nb, ROOT / "results" / "runs" / nb.name, smoke, timeout, args.kernel)
        runs.append(run)
        print(f"  {run.status} in {run.seconds:.1f} s {run.error}", flush=True)
        for x in run.results:
            print(f"    {x['name']}: {x['text']}")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(markdown_report(runs, f"Notebook run ({mode_name} mode)"))
        os.replace(tmp, out)  # the report is rewritten after every notebook: nothing lost on failure
    print(f"report: {out}")
    return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
