#!/usr/bin/env python
"""Execute notebooks in smoke mode and store only the outputs worth keeping.

Kept: cells whose source has ``# NBVAL_CHECK_OUTPUT`` (compared by ``pytest --nbval-lax``) and
cells tagged ``keep_output`` (figures students should see before running). Every other cell's
outputs and execution count are cleared, so the files stay small and diffs stay readable.

    python tools/store_outputs.py notebooks/01_images_and_convolution.ipynb [...]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

CHECK = "# NBVAL_CHECK_OUTPUT"


def keep(cell) -> bool:
    return cell.cell_type == "code" and (CHECK in cell.source or "keep_output" in cell.metadata.get("tags", []))


def store(path: Path, timeout: int) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ["CVDL_SMOKE"] = "1"
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    took = time.perf_counter() - start
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if not keep(cell):
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)  # widget state of cleared outputs: dead weight
    nb.metadata["kernelspec"] = {"name": "cvdl", "display_name": "Python (cvdl course)", "language": "python"}
    nbformat.write(nb, path)
    size = path.stat().st_size
    print(f"{path}: executed in {took:.1f} s, stored {size / 1e3:.0f} kB")
    if size > 1_000_000:
        print(f"  WARNING: {path} is over 1 MB; keep fewer figures", file=sys.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--timeout", type=int, default=300, help="per-cell timeout in seconds")
    args = ap.parse_args(argv)
    for p in args.notebooks:
        if not p.is_file():
            ap.error(f"no such notebook: {p}")
        store(p, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
