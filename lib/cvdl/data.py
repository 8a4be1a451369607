"""Datasets as tensors: MNIST, CIFAR-10, digits, text and photos, with clear offline fallbacks.

The loaders return an :class:`ImageSet` (uint8 images ``[N, C, H, W]``, int64 labels ``[N]``) or a
string; the photos that ship with scikit-learn and scikit-image are always present. The files come
from one registry through verified, cached fetching (cache, then a local mirror
``CVDL_DATA_MIRROR``, then the network): that machinery lives in :mod:`cvdl._fetch`, and its public
names are re-exported here — ``REGISTRY``, ``FileSpec``, ``DatasetSpec``, ``DatasetUnavailable``,
``fetch``, ``status``, ``checksum_of``, ``data_root``.

When a dataset cannot be had, the loader prints **one** message naming the dataset, every place it
looked and the fallback it uses — never a silent switch, never a traceback from inside ``urllib``.

>>> mnist = load_mnist("train")          # ImageSet: images uint8 [N, 1, 28, 28], labels int64 [N]
>>> mnist.source                         # 'cache', 'mirror', 'download' or 'fallback: ...'
>>> cat = photo_tensor("chelsea", 64)    # float [1, 3, 64, 64] in [0, 1]
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from . import _checks
from ._fetch import (REGISTRY, DatasetSpec, DatasetUnavailable, FileSpec, _spec, checksum_of,
                     data_root, fetch, status)

__all__ = [
    # loaders
    "ImageSet", "load_mnist", "load_cifar10", "load_digits", "load_text", "CIFAR10_CLASSES",
    # photos
    "load_photo", "photo_tensor", "to_grey", "SKLEARN_PHOTOS", "SKIMAGE_PHOTOS",
    # the registry and fetching (from cvdl._fetch)
    "REGISTRY", "FileSpec", "DatasetSpec", "DatasetUnavailable", "fetch", "status", "checksum_of", "data_root",
]

_ANNOUNCED: set[int] = set()

# ----------------------------------------------------------------------------------------------
# Image sets
# ----------------------------------------------------------------------------------------------


@dataclass
class ImageSet:
    """Images and labels held as tensors.

    ``images``: uint8 ``[N, C, H, W]``; ``labels``: int64 ``[N]``; ``classes``: class names;
    ``source``: where it came from (``cache`` / ``mirror`` / ``download`` / ``fallback: ...``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    source: str
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be [N] = [{self.images.shape[0]}], got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        return f"ImageSet({self.name!r}, {n} images {c}×{h}×{w}, {len(self.classes)} classes, source={self.source!r})"

    @property
    def fallback(self) -> bool:
        return self.source.startswith("fallback")

    def float(self) -> torch.Tensor:
        """Images as float32 in [0, 1]."""
        return self.images.float().div_(255.0)

    def subset(self, n: int | None = None, seed: int = 0, per_class: int | None = None) -> "ImageSet":
        """A random subset of ``n`` images (or ``per_class`` images of every class)."""
        g = torch.Generator().manual_seed(seed)
        if per_class is not None:
            idx = torch.cat([
                (self.labels == c).nonzero().flatten()[
                    torch.randperm(int((self.labels == c).sum()), generator=g)[:per_class]]
                for c in range(len(self.classes))])
            idx = idx[torch.randperm(len(idx), generator=g)]
        else:
            if n is None or n >= len(self):
                return self
            if n <= 0:
                raise ValueError(f"subset size must be positive, got {n}")
            idx = torch.randperm(len(self), generator=g)[:n]
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.name, self.source, self.extra)


def _announce(err: DatasetUnavailable) -> None:
    """Print the fallback message — once per failure, however many splits are loaded."""
    if id(err) not in _ANNOUNCED:
        _ANNOUNCED.add(id(err))
        print(str(err), file=sys.stderr, flush=True)


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _digits_fallback(split: str, size: int, channels: int) -> ImageSet:
    """scikit-learn's digits, resized to ``size``×``size``, split 80/20 deterministically."""
    from sklearn.datasets import load_digits
    import torch.nn.functional as F

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # [1797, 1, 8, 8]
    x = F.interpolate(x, size=(size - 8, size - 8), mode="bilinear", align_corners=False)
    x = F.pad(x, (4, 4, 4, 4))  # a margin like MNIST's
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, channels, 1, 1)
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(y))
    idx = perm[:cut] if split == "train" else perm[cut:]
    return ImageSet(x[idx], y[idx], [str(i) for i in range(10)], "digits",
                    "fallback: scikit-learn digits")


def load_mnist(split: str = "train") -> ImageSet:
    """MNIST as an :class:`ImageSet` (uint8 ``[N, 1, 28, 28]``), read by torchvision.

    Falls back (with one message) to scikit-learn's digits resized to 28×28.
    """
    _check_split(split)
    try:
        root, source = fetch("mnist")
    except DatasetUnavailable as err:
        _announce(err)
        return _digits_fallback(split, 28, 1)
    from torchvision.datasets import MNIST

    ds = MNIST(str(root), train=(split == "train"), download=False)
    return ImageSet(ds.data[:, None].contiguous(), ds.targets.long(), [str(i) for i in range(10)],
                    "mnist", source)


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


def load_cifar10(split: str = "train") -> ImageSet:
    """CIFAR-10 as an :class:`ImageSet` (uint8 ``[N, 3, 32, 32]``).

    The full set through torchvision when cached or downloadable; otherwise (one message) the
    test set alone (``cifar10-test``, e.g. from the local mirror) split 80/20 into train/test;
    otherwise scikit-learn's digits as 32×32 colour images.
    """
    _check_split(split)
    try:
        root, source = fetch("cifar10")
        from torchvision.datasets import CIFAR10

        ds = CIFAR10(str(root), train=(split == "train"), download=False)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return ImageSet(x, torch.tensor(ds.targets, dtype=torch.int64), CIFAR10_CLASSES,
                        "cifar10", source)
    except DatasetUnavailable as err:
        _announce(err)
    try:
        root, source = fetch("cifar10-test")
    except DatasetUnavailable as err:
        _announce(err)
        out = _digits_fallback(split, 32, 3)
        return out
    with np.load(root / REGISTRY["cifar10-test"].files[0].path) as z:
        x = torch.from_numpy(z["x_test"]).permute(0, 3, 1, 2).contiguous()
        y = torch.from_numpy(z["y_test"].astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(y))
    idx = perm[:cut] if split == "train" else perm[cut:]
    return ImageSet(x[idx], y[idx], CIFAR10_CLASSES, "cifar10",
                    f"fallback: CIFAR-10 test set only ({source}), split 80/20")


def load_digits(split: str | None = None) -> ImageSet:
    """scikit-learn's 8×8 digits (always present), as uint8 ``[N, 1, 8, 8]`` scaled to 0..255."""
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    x = torch.tensor(d.images * (255.0 / 16.0)).round().to(torch.uint8)[:, None]
    y = torch.tensor(d.target, dtype=torch.int64)
    if split is not None:
        _check_split(split)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        cut = int(0.8 * len(y))
        idx = perm[:cut] if split == "train" else perm[cut:]
        x, y = x[idx], y[idx]
    return ImageSet(x, y, [str(i) for i in range(10)], "digits", "bundled with scikit-learn")


_FALLBACK_TEXT = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?

All:
Resolved. resolved.
"""


def load_text(name: str = "tinyshakespeare") -> str:
    """A text corpus from the registry (falls back, with one message, to a short passage)."""
    spec = _spec(name)
    try:
        root, _ = fetch(name)
    except DatasetUnavailable as err:
        _announce(err)
        return _FALLBACK_TEXT
    return (root / spec.files[0].path).read_text(encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# Photos that ship with scikit-learn and scikit-image (always present, no network)
# ----------------------------------------------------------------------------------------------

SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
SKIMAGE_PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "moon", "page", "text", "coins", "horse", "grass",
                  "gravel", "brick", "retina")


def load_photo(name: str = "china.jpg") -> np.ndarray:
    """A real photo as a uint8 NumPy array (``H×W×3`` colour or ``H×W`` grey).

    ``name`` is one of scikit-learn's sample images (``"china.jpg"``, ``"flower.jpg"``) or one of
    scikit-image's bundled images (``"astronaut"``, ``"camera"``, ``"coffee"``, ``"chelsea"``, ...).
    """
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)
    if name in SKIMAGE_PHOTOS:
        import skimage.data

        img = getattr(skimage.data, name)()
        if img.dtype != np.uint8:
            img = (255 * (img.astype(np.float64) / max(img.max(), 1))).astype(np.uint8)
        return img
    raise ValueError(f"unknown photo {name!r}; choose one of {SKLEARN_PHOTOS + SKIMAGE_PHOTOS}")


def to_grey(img: np.ndarray) -> np.ndarray:
    """A photo in grey: ``H×W×3`` (or ``H×W×4``, alpha ignored) → ``H×W`` float64 in [0, 1], the
    ITU-R 601 luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (what Pillow's ``convert("L")`` computes).

    uint8 input (what :func:`load_photo` gives) is scaled by 1/255; floating-point input is taken
    to be in [0, 1] already and kept on that scale. Grey ``H×W`` input is only scaled.

    Raises:
        ValueError: a shape other than ``H×W``, ``H×W×3`` or ``H×W×4``.
        TypeError: a dtype other than uint8 or floating point.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ValueError(f"expected an H×W or H×W×3 image, got shape {img.shape}")
    if img.dtype == np.uint8:
        scale = 255.0
    elif np.issubdtype(img.dtype, np.floating):
        scale = 1.0
    else:
        raise TypeError(f"expected a uint8 image (0..255) or a floating-point one (0..1), got dtype {img.dtype}")
    img = img.astype(np.float64)
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114])             # [H, W]
    return img / scale


def photo_tensor(name: str = "china.jpg", size: int | None = None, grey: bool = False) -> torch.Tensor:
    """A photo of :func:`load_photo` as a batch of one float image: ``Tensor[1, C, H, W]`` in [0, 1].

    ``C`` is 3 (a grey photo is repeated over the three channels), or 1 with ``grey=True``
    (:func:`to_grey`'s luma). ``size=None`` keeps the photo's own ``H×W``; ``size=S`` crops the
    central square (side ``min(H, W)``) and resizes it to ``S×S`` (bilinear, antialiased), so the
    result is ``[1, C, S, S]``.

    >>> photo_tensor("chelsea", 224).shape             # torch.Size([1, 3, 224, 224])
    >>> photo_tensor("camera", 64, grey=True).shape    # torch.Size([1, 1, 64, 64])

    Raises:
        ValueError: an unknown photo name (the message lists the choices), or ``size <= 0``.
        TypeError: ``size`` not an integer, or ``grey`` not a bool.
    """
    if size is not None:
        _checks.positive_int(size=size)
    if not isinstance(grey, bool):
        raise TypeError(f"grey must be True or False, got {grey!r} ({type(grey).__name__})")
    a = load_photo(name)                                                  # uint8 [H, W, 3] or [H, W]
    if grey:
        a = to_grey(a)[..., None]                                         # [H, W, 1]
    else:
        a = (np.dstack([a] * 3) if a.ndim == 2 else a[..., :3]) / 255.0  # [H, W, 3]
    x = torch.from_numpy(np.ascontiguousarray(a)).float().permute(2, 0, 1)[None]   # [1, C, H, W]
    if size is None:
        return x.contiguous()
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    m = min(h, w)
    top, left = (h - m) // 2, (w - m) // 2
    x = x[..., top:top + m, left:left + m].contiguous()                  # [1, C, m, m]
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)                 # [1, C, S, S]
