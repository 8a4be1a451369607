"""Datasets: one registry, verified cached downloads, a local mirror, and clear fallbacks.

Where a file is looked for, in order:

1. the cache (``cvdl.config.cache_dir() / "data"``, overridable with ``CVDL_CACHE``);
2. a local mirror directory (``CVDL_DATA_MIRROR``), copied or unpacked into the cache;
3. the dataset's public URLs, downloaded with a progress bar into a temporary file that is
   renamed only after its checksum passes.

When all three fail the loader prints **one** message naming the dataset, every place it looked
and the fallback it uses — never a silent switch, never a traceback from inside ``urllib``.

>>> mnist = load_mnist("train")          # ImageSet: images uint8 [N, 1, 28, 28], labels int64 [N]
>>> mnist.source                         # 'cache', 'mirror', 'download' or 'fallback: ...'
"""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import cache_dir, is_ci, mirror_dir

# ----------------------------------------------------------------------------------------------
# The registry
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset.

    ``path`` is where the verified file lives, relative to the data root (the same relative path
    is looked for in the mirror, with ``.gz`` appended when ``gunzip`` is set). ``checksum`` is
    ``"md5:..."`` or ``"sha256:..."`` of the *final* file (after unpacking), so a re-compressed
    mirror copy and the original download verify alike.
    """

    path: str
    urls: tuple[str, ...]
    checksum: str
    size: int  # bytes of the final file
    gunzip: bool = False  # the download / mirror copy is ``path + ".gz"``


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    licence: str
    homepage: str
    files: tuple[FileSpec, ...]
    fallback: str  # what a loader uses when the files cannot be had
    extract: str | None = None  # a tar archive to unpack after verification (its directory)


_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")


def _mnist_file(stem: str, md5: str, size: int) -> FileSpec:
    return FileSpec(path=f"MNIST/raw/{stem}", urls=tuple(m + stem + ".gz" for m in _MNIST_MIRRORS),
                    checksum=f"md5:{md5}", size=size, gunzip=True)


REGISTRY: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        description="MNIST handwritten digits, 60 000 train + 10 000 test, 28×28 grey",
        licence="CC BY-SA 3.0 (as commonly distributed)",
        homepage="http://yann.lecun.com/exdb/mnist/",
        files=(
            _mnist_file("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", 47040016),
            _mnist_file("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", 60008),
            _mnist_file("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", 7840016),
            _mnist_file("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", 10008),
        ),
        fallback="scikit-learn's 8×8 digits (1 797 images) resized to 28×28",
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        description="CIFAR-10, 50 000 train + 10 000 test, 32×32 colour, 10 classes",
        licence="distributed by its authors for research and teaching",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        files=(FileSpec(path="cifar-10-python.tar.gz",
                        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                        checksum="md5:c58f30108f718f92721af3b95e74349a", size=170498071),),
        extract="cifar-10-batches-py",
        fallback="the CIFAR-10 test set alone (dataset 'cifar10-test'), split 80/20 into train/test",
    ),
    "cifar10-test": DatasetSpec(
        name="cifar10-test",
        description="CIFAR-10 test set as NumPy arrays (x_test NHWC uint8, y_test), 10 000 images",
        licence="distributed by its authors for research and teaching",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        files=(FileSpec(path="cifar10/cifar10_test.npz", urls=(),
                        checksum="sha256:5d3e7695eab9bb23aab9fbc2667e0b0da3e97a7e142c989603398d39ccc8dce9",
                        size=28_000_000),),
        fallback="scikit-learn's digits as 32×32 colour images",
    ),
    "tinyshakespeare": DatasetSpec(
        name="tinyshakespeare",
        description="tiny-shakespeare, 1.1 MB of plays, for character-level language models",
        licence="public domain",
        homepage="https://github.com/karpathy/char-rnn",
        files=(FileSpec(path="tinyshakespeare/input.txt",
                        urls=("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                              "tinyshakespeare/input.txt",),
                        checksum="md5:6fb458f1232090904fb40fe944165e91", size=1115394),),
        fallback="a short public-domain passage bundled with cvdl",
    ),
}


class DatasetUnavailable(RuntimeError):
    """Raised by :func:`fetch` when a dataset is neither cached, mirrored nor downloadable."""

    def __init__(self, name: str, looked: list[str], fallback: str):
        self.name, self.looked, self.fallback = name, looked, fallback
        lines = [f"Dataset '{name}' is not available: it is not cached, not in a local mirror, "
                 f"and could not be downloaded."]
        lines += [f"  looked in: {where}" for where in looked]
        lines.append(f"  falling back to: {fallback}")
        lines.append("  (set CVDL_DATA_MIRROR to a folder holding the files, or connect to the "
                     "internet, to use the real dataset)")
        super().__init__("\n".join(lines))


def data_root() -> Path:
    path = cache_dir() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _spec(name: str) -> DatasetSpec:
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; the registry has {sorted(REGISTRY)}")
    return REGISTRY[name]


# ----------------------------------------------------------------------------------------------
# Verified files
# ----------------------------------------------------------------------------------------------


def checksum_of(path: str | os.PathLike, algo: str = "md5", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, checksum: str) -> bool:
    algo, _, want = checksum.partition(":")
    return path.is_file() and checksum_of(path, algo) == want


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _is_cached(path: Path, checksum: str) -> bool:
    """A cached file counts when it verified once (a marker with its checksum sits beside it)."""
    marker = _marker(path)
    if path.is_file() and marker.is_file() and marker.read_text().strip() == checksum:
        return True
    if _verify(path, checksum):
        marker.write_text(checksum)
        return True
    return False


def _install(src_stream_factory: Callable[[], "object"], dest: Path, checksum: str, gunzip: bool,
             total: int | None, desc: str) -> None:
    """Copy a byte stream to ``dest`` through a temporary file; rename only if the checksum passes."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, src_stream_factory() as raw:
            stream = gzip.GzipFile(fileobj=raw) if gunzip else raw
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=is_ci() or None,
                      leave=False) as bar:
                for block in iter(lambda: stream.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        algo, _, want = checksum.partition(":")
        got = checksum_of(tmp, algo)
        if got != want:
            raise OSError(f"checksum mismatch for {dest.name}: expected {algo} {want}, got {got}")
        os.replace(tmp, dest)
        _marker(dest).write_text(checksum)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class _Closing:
    """Use an open HTTP response as a context manager that closes it (like ``open`` for files)."""

    def __init__(self, resp):
        self.resp = resp

    def __enter__(self):
        return self.resp

    def __exit__(self, *exc):
        self.resp.close()


def _fetch_file(spec: FileSpec, root: Path, looked: list[str], timeout: float) -> str | None:
    """Make one file present and verified under ``root``. Returns where it came from, or None."""
    dest = root / spec.path
    if _is_cached(dest, spec.checksum):
        return "cache"
    looked.append(f"cache {dest}")

    mirror = mirror_dir()
    if mirror is not None:
        src = mirror / (spec.path + (".gz" if spec.gunzip else ""))
        if src.is_file():
            try:
                _install(lambda: open(src, "rb"), dest, spec.checksum, spec.gunzip,
                         None, f"unpacking {src.name}")
                return "mirror"
            except (OSError, EOFError) as err:
                looked.append(f"mirror {src} (present but unusable: {err})")
        else:
            looked.append(f"mirror {src} (not there)")
    else:
        looked.append("mirror: none set (CVDL_DATA_MIRROR is unset)")

    for url in spec.urls:
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (public https URLs)
            length = resp.headers.get("Content-Length")
            _install(lambda: _Closing(resp), dest, spec.checksum, spec.gunzip,
                     int(length) if length else None, f"downloading {Path(url).name}")
            return "download"
        except Exception as err:  # any network failure becomes one line of the message
            reason = getattr(err, "reason", None) or err
            looked.append(f"download {url} ({type(err).__name__}: {reason})")
    if not spec.urls:
        looked.append("download: this file has no public URL (mirror only)")
    return None


_FAILED: dict[tuple, DatasetUnavailable] = {}
_ANNOUNCED: set[int] = set()


def fetch(name: str, timeout: float = 15.0) -> tuple[Path, str]:
    """Make every file of dataset ``name`` present and verified; return (root, source).

    ``source`` is ``"cache"``, ``"mirror"`` or ``"download"`` (the least local one used).
    Raises :class:`DatasetUnavailable` with the full story when a file cannot be had (a failure
    is remembered for the rest of the process, so the network is not asked again).
    """
    spec = _spec(name)
    root = data_root()
    key = (name, str(root), str(mirror_dir()))
    if key in _FAILED:  # tried and failed in this process: don't wait on the network again
        raise _FAILED[key]
    sources = []
    for f in spec.files:
        looked: list[str] = []
        src = _fetch_file(f, root, looked, timeout)
        if src is None:
            _FAILED[key] = DatasetUnavailable(name, looked, spec.fallback)
            raise _FAILED[key]
        sources.append(src)
    if spec.extract and not (root / spec.extract).is_dir():
        import tarfile

        with tarfile.open(root / spec.files[0].path) as tar:
            tar.extractall(root, filter="data") if sys.version_info >= (3, 12) else tar.extractall(root)
    order = ["download", "mirror", "cache"]
    return root, min(sources, key=order.index)


def status(names: list[str] | None = None) -> list[dict]:
    """Which datasets are here (cached or mirrored) without touching the network."""
    rows = []
    mirror = mirror_dir()
    for name in names or list(REGISTRY):
        spec = _spec(name)
        where = []
        for f in spec.files:
            dest = data_root() / f.path
            if dest.is_file() and _marker(dest).is_file():
                where.append("cache")
            elif mirror is not None and (mirror / (f.path + (".gz" if f.gunzip else ""))).is_file():
                where.append("mirror")
            elif f.urls:
                where.append("download")
            else:
                where.append("missing")
        state = ("missing" if "missing" in where else "download" if "download" in where
                 else "mirror" if "mirror" in where else "cache")
        rows.append({"dataset": name, "state": state, "fallback": spec.fallback if state in
                     ("missing", "download") else "", "description": spec.description})
    return rows


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
                  "gravel", "brick")


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
    """``H×W×3`` uint8 → ``H×W`` float in [0, 1] (ITU-R 601 luma); grey input is just scaled."""
    img = np.asarray(img)
    if img.ndim == 2:
        return img.astype(np.float64) / 255.0
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an H×W or H×W×3 image, got shape {img.shape}")
    return (img[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])) / 255.0
