"""Record a notebook's headline results so that ``make run-all`` can tabulate them.

>>> cvdl.record("baseline test accuracy", 0.9921, "{:.2%}")
baseline test accuracy: 99.21%

The value is printed; when ``CVDL_RESULTS_FILE`` is set (the notebook runner sets it), it is
also appended as one JSON line to that file.
"""
from __future__ import annotations

import json
import os
import time


def record(name: str, value, fmt: str | None = None) -> None:
    """Print ``name: value`` and append it to ``$CVDL_RESULTS_FILE`` when set."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if hasattr(value, "item"):  # tensors and numpy scalars
        value = value.item()
    text = fmt.format(value) if fmt else str(value)
    print(f"{name}: {text}")
    path = os.environ.get("CVDL_RESULTS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"name": name, "value": value, "text": text, "time": time.time()},
                               default=str) + "\n")


def record_array(name: str, array) -> None:
    """Keep an array a figure shows, so tests can check it is finite and not blank.

    When ``CVDL_ARRAYS_DIR`` is set (the notebook tests set it), the array is saved there as
    ``<name>.npy`` (a counter is appended when the name repeats); otherwise nothing happens.
    ``cvdl.plot``'s functions call this for every image they draw.
    """
    folder = os.environ.get("CVDL_ARRAYS_DIR")
    if not folder:
        return
    import re

    import numpy as np

    if hasattr(array, "detach"):
        array = array.detach().float().cpu().numpy()
    array = np.asarray(array)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "array"
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, stem + ".npy")
    k = 1
    while os.path.exists(path):
        k += 1
        path = os.path.join(folder, f"{stem}-{k}.npy")
    np.save(path, array, allow_pickle=False)
