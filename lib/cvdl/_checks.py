"""Argument checks shared by every module: one home, one wording per error.

A wrong *type* raises ``TypeError``; a value of the right type that is out of range raises
``ValueError``. Each message names the argument, says what was expected and shows what was given.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

_SHAPES = {2: "[N, D]", 3: "[N, L, D]", 4: "[N, C, H, W]", 5: "[N, C, T, H, W]"}


def positive_int(**values) -> None:
    """``positive_int(steps=steps, k=k)``: each value must be an ``int`` (not a bool) ``> 0``."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be a positive integer, got {v!r} ({type(v).__name__})")
        if v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def split_size(split: str, splits: dict, n: int | None, noun: str = "images") -> tuple[int, int, int]:
    """A generated set's ``split`` → ``(size, seed, kept)`` from ``splits`` ``{split: (size, seed)}``;
    ``kept`` is ``n`` (checked: a positive int no larger than the split) or the whole split."""
    if split not in splits:
        raise ValueError(f"split must be one of {sorted(splits)}, got {split!r}")
    size, seed = splits[split]
    if n is None:
        return size, seed, size
    positive_int(n=n)
    if n > size:
        raise ValueError(f"the {split} split has {size} {noun}; asked for n={n}")
    return size, seed, n


def non_negative_int(**values) -> None:
    """Each value must be an ``int`` (not a bool) ``>= 0``."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be a non-negative integer, got {v!r} ({type(v).__name__})")
        if v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")


def non_negative(**values) -> None:
    """Each value must be a finite real number ``>= 0``."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a finite number >= 0, got {v!r} ({type(v).__name__})")
        if not v >= 0 or math.isinf(v):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


def positive(**values) -> None:
    """Each value must be a finite real number ``> 0``."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a positive number, got {v!r} ({type(v).__name__})")
        if not v > 0 or math.isinf(v):
            raise ValueError(f"{name} must be a positive number, got {v!r}")


def finite(**values) -> None:
    """Each value must be a finite real number (any sign)."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a finite number, got {v!r} ({type(v).__name__})")
        if not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")


def tensor(x, name: str = "x") -> torch.Tensor:
    """``x`` must be a ``torch.Tensor``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    return x


def images(x, name: str = "x", ndim: int | None = 4, unit_range: bool = False) -> torch.Tensor:
    """A floating-point image batch: ``Tensor[N, C, H, W]`` (``ndim=None``: any ``[N, ...]``).

    ``unit_range``: the values must also be finite and lie in ``[0, 1]`` (pixels).
    Returns ``x`` so that a check can sit inside an expression.
    """
    want = _SHAPES.get(ndim, f"{ndim}-d") if ndim is not None else "[N, ...]"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor {want}, got {type(x).__name__}")
    if (ndim is not None and x.ndim != ndim) or (ndim is None and x.ndim < 2):
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor (e.g. ImageSet.float()), got dtype {x.dtype}")
    if unit_range and x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must have values in [0, 1], got values in "
                         f"[{x.min().item():.4g}, {x.max().item():.4g}]")
    return x


def module(model, name: str = "model") -> nn.Module:
    """``model`` must be a ``torch.nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of ``model``'s first floating parameter; float32 for a model without one."""
    for t in model.parameters():
        if t.dtype.is_floating_point:
            return t.dtype
    return torch.float32
