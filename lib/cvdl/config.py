"""Run-mode flags and the directories the course writes to.

Every notebook's ``parameters`` cell reads ``SMOKE = cvdl.is_smoke()``: papermill can override
it, and ``CVDL_SMOKE=1`` switches tools that cannot inject parameters (nbval) to the smoke path.
"""
from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"environment variable {name} must be one of {sorted(_TRUE | _FALSE - {''})}, got {raw!r}")


def is_smoke() -> bool:
    """True when ``CVDL_SMOKE`` asks for the seconds-long smoke run instead of the full one."""
    return _flag("CVDL_SMOKE")


def is_ci() -> bool:
    """True under CI (``CI`` set): progress bars go quiet."""
    return _flag("CI")


def cache_dir() -> Path:
    """Per-user cache for downloads and checkpoints (``CVDL_CACHE`` overrides ``~/.cache/cvdl``)."""
    root = os.environ.get("CVDL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "cvdl")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def mirror_dir() -> Path | None:
    """A local read-only mirror of the datasets (``CVDL_DATA_MIRROR``), tried before the network."""
    raw = os.environ.get("CVDL_DATA_MIRROR")
    return Path(raw) if raw else None


def checkpoint_dir() -> Path:
    path = cache_dir() / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path
