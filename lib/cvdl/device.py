"""Device choice and seeding, each in one call.

>>> import cvdl
>>> device = cvdl.get_device()          # CUDA, then MPS, then CPU
>>> cvdl.seed_everything(0)
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

_CHOICES = ("cuda", "mps", "cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def get_device(prefer: str | None = None) -> torch.device:
    """Return the best available device: CUDA, then Apple MPS, then CPU.

    ``prefer`` (or the ``CVDL_DEVICE`` environment variable) forces one of
    ``"cuda"``, ``"mps"``, ``"cpu"`` (``"cuda:1"`` also works); asking for one that is not
    available raises a ``ValueError`` that says what is.
    """
    prefer = prefer if prefer is not None else os.environ.get("CVDL_DEVICE") or None
    if prefer is not None:
        if not isinstance(prefer, str) or prefer.split(":")[0] not in _CHOICES:
            raise ValueError(f"device must be one of {_CHOICES} (or 'cuda:N'), got {prefer!r}")
        kind = prefer.split(":")[0]
        ok = {"cuda": torch.cuda.is_available(), "mps": _mps_available(), "cpu": True}[kind]
        if not ok:
            raise ValueError(f"device {prefer!r} was asked for but is not available here; "
                             f"available: {available_devices()}")
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list[str]:
    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    if _mps_available():
        out.append("mps")
    out.append("cpu")
    return out


def describe_device(device: torch.device | str | None = None) -> str:
    """One line naming the device (GPU model and memory, or CPU threads)."""
    device = torch.device(device) if device is not None else get_device()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda — {props.name}, {props.total_memory / 2**30:.0f} GiB"
    if device.type == "mps":
        return "mps — Apple GPU (Metal)"
    return f"cpu — {torch.get_num_threads()} threads (no GPU found; everything still runs)"


def seed_everything(seed: int = 0, deterministic: bool = False) -> int:
    """Seed Python, NumPy and PyTorch (all devices). Returns the seed.

    ``deterministic=True`` also asks cuDNN for deterministic kernels (slower).
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed
