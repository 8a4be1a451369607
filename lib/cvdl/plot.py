"""Plots the notebooks share: image grids, mosaics, learning curves, feature maps, filters, confusion.

Every function returns the matplotlib ``Figure`` (so tests and notebooks can save or inspect it)
and accepts NumPy arrays or tensors.
"""
from __future__ import annotations

import math

import numpy as np


def _np(a) -> np.ndarray:
    try:
        import torch

        if isinstance(a, torch.Tensor):
            return a.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(a)


def _to_hwc(img: np.ndarray) -> np.ndarray:
    """``[C,H,W]`` / ``[H,W,C]`` / ``[H,W]`` → displayable ``[H,W]`` or ``[H,W,3]``."""
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3):
        raise ValueError(f"cannot show an image of shape {img.shape}; expected [H,W], [C,H,W] or [H,W,C]")
    return img


def _normalise(img: np.ndarray) -> np.ndarray:
    was_int = img.dtype.kind in "ui"
    img = img.astype(np.float64)
    if was_int or img.max() > 1.0 or img.min() < 0.0:
        lo, hi = img.min(), img.max()
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


def show_images(images, titles=None, ncols: int = 8, size: float = 1.5, cmap: str = "gray",
                suptitle: str | None = None, normalise: bool = True):
    """A grid of images (``[N,C,H,W]``, ``[N,H,W]``, ``[N,H,W,C]`` or a list of arrays)."""
    import matplotlib.pyplot as plt

    imgs = [_np(im) for im in images] if isinstance(images, (list, tuple)) else list(_np(images))
    if not imgs:
        raise ValueError("show_images needs at least one image")
    from .report import record_array

    record_array(suptitle or "show_images", np.stack(imgs) if len({im.shape for im in imgs}) == 1 else imgs[0])
    if titles is not None and len(titles) != len(imgs):
        raise ValueError(f"got {len(imgs)} images but {len(titles)} titles")
    ncols = max(1, min(ncols, len(imgs)))
    nrows = math.ceil(len(imgs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(imgs):
            continue
        img = _to_hwc(imgs[i])
        if normalise:
            img = _normalise(img)
        ax.imshow(img, cmap=cmap if img.ndim == 2 else None, vmin=None if not normalise else 0,
                  vmax=None if not normalise else 1, interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def mosaic(images, ncols: int = 8, title: str | None = None, row_labels=None, size: float = 0.9,
           pad: int = 2):
    """Many small images as **one** picture: ``[N, C, h, w]`` (``C`` = 1 or 3) → a grid of
    ``ceil(N / ncols)`` rows and ``ncols`` columns, images separated by ``pad`` white pixels.

    Each image is scaled to [0, 1] on its own (``(x - min) / (max - min)``; a constant image is
    black). One axes instead of one per image (:func:`show_images`), so a hundred receptive-field
    patches draw in a fraction of the time. ``images``: a tensor or array ``[N, C, h, w]`` or
    ``[N, h, w]``, or a list of ``[C, h, w]`` / ``[h, w]`` images of one shape. ``row_labels``: one
    label per row, written on the left. Returns the Figure.

    Raises:
        ValueError: no images, images of different shapes, a channel count other than 1 or 3, or
            a number of row labels that differs from the number of rows.
        TypeError: ``ncols`` or ``pad`` not an integer.
    """
    import matplotlib.pyplot as plt

    from . import _checks
    from .report import record_array

    _checks.positive_int(ncols=ncols)
    _checks.non_negative_int(pad=pad)
    _checks.positive(size=size)
    imgs = [_np(im).astype(np.float64) for im in images]
    if not imgs:
        raise ValueError("mosaic needs at least one image")
    imgs = [im[None] if im.ndim == 2 else im for im in imgs]  # [h, w] -> [1, h, w]
    shapes = sorted({im.shape for im in imgs})
    if len(shapes) > 1:
        raise ValueError(f"mosaic needs images of one shape [C, h, w], got shapes {shapes}")
    c, h, w = shapes[0] if len(shapes[0]) == 3 else (None, None, None)
    if c not in (1, 3):
        raise ValueError(f"mosaic draws images [N, C, h, w] or [N, h, w] with C = 1 or 3, got "
                         f"images of shape {shapes[0]}")
    n, nrows = len(imgs), math.ceil(len(imgs) / ncols)
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(f"{n} images in rows of {ncols} make {nrows} rows, got {len(row_labels)} row labels")
    grid = np.ones((c, nrows * (h + pad) - pad, ncols * (w + pad) - pad))        # [C, H, W], white
    for k, im in enumerate(imgs):
        lo, hi = im.min(), im.max()
        r, q = divmod(k, ncols)
        grid[:, r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = (im - lo) / max(hi - lo, 1e-12)
    record_array(title or "mosaic", grid)
    fig, ax = plt.subplots(figsize=(size * ncols, size * nrows + 0.5))
    shown = grid[0] if c == 1 else np.moveaxis(grid, 0, -1)                     # [H, W] or [H, W, 3]
    ax.imshow(shown, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(h + pad) * r + (h - 1) / 2 for r in range(nrows)] if row_labels is not None else [])
    if row_labels is not None:
        ax.set_yticklabels([str(label) for label in row_labels], fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_history(histories, metrics=("loss", "acc"), title: str | None = None):
    """Learning curves. ``histories``: a ``History`` or ``{label: History}``."""
    import matplotlib.pyplot as plt

    if hasattr(histories, "rows"):
        histories = {"": histories}
    if not histories:
        raise ValueError("plot_history needs at least one history")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for label, h in histories.items():
            epochs = h["epoch"]
            for split, style in (("train", "--"), ("val", "-")):
                values = h[f"{split}_{metric}"]
                if any(v is not None for v in values):
                    ax.plot(epochs, values, style, marker="o", ms=3,
                            label=f"{label} {split}".strip())
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_feature_maps(maps, titles=None, ncols: int = 8, size: float = 1.6, cmap: str = "viridis",
                      suptitle: str | None = None):
    """Feature maps ``[C,H,W]`` (or ``[1,C,H,W]``), one panel per channel, each with its own scale."""
    maps = _np(maps)
    if maps.ndim == 4 and maps.shape[0] == 1:
        maps = maps[0]
    if maps.ndim != 3:
        raise ValueError(f"feature maps must be [C,H,W] or [1,C,H,W], got shape {maps.shape}")
    return show_images(list(maps), titles=titles, ncols=ncols, size=size, cmap=cmap, suptitle=suptitle)


def plot_filters(weights, ncols: int = 8, size: float = 1.0, suptitle: str | None = None):
    """Convolution filters ``[O,I,k,k]``: RGB when ``I == 3``, else the first input channel."""
    w = _np(weights)
    if w.ndim != 4:
        raise ValueError(f"filters must be [out, in, k, k], got shape {w.shape}")
    panels = [f if w.shape[1] == 3 else f[0] for f in w]
    return show_images(panels, ncols=ncols, size=size, cmap="gray", suptitle=suptitle)


def plot_confusion(y_true, y_pred, classes=None, normalise: bool = True, title: str | None = None):
    """Confusion matrix (rows: true class, columns: predicted), using scikit-learn's counts."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    y_true, y_pred = _np(y_true).astype(int), _np(y_pred).astype(int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {y_true.shape} and {y_pred.shape}")
    n = len(classes) if classes is not None else int(max(y_true.max(), y_pred.max())) + 1
    cm = confusion_matrix(y_true, y_pred, labels=list(range(n))).astype(float)
    if normalise:
        cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.5 * n + 2, 0.5 * n + 1.5))
    im = ax.imshow(cm, cmap="Blues")
    names = classes if classes is not None else list(range(n))
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if cm[i, j] > 0:
                ax.text(j, i, f"{cm[i, j]:.2f}" if normalise else int(cm[i, j]), ha="center", va="center",
                        fontsize=6, color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
