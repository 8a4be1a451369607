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
