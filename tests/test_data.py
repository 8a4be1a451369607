"""cvdl.data: the registry, verified downloads, the local mirror, and the offline fallback."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cvdl import config, data

MIRROR = Path(os.environ["CVDL_DATA_MIRROR"]) if os.environ.get("CVDL_DATA_MIRROR") else None
needs_mirror = pytest.mark.skipif(MIRROR is None or not (MIRROR / "MNIST").is_dir(),
                                  reason="no local data mirror (CVDL_DATA_MIRROR) with MNIST")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache, so nothing is 'already downloaded'."""
    monkeypatch.setenv("CVDL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def no_mirror(monkeypatch):
    monkeypatch.delenv("CVDL_DATA_MIRROR", raising=False)


@pytest.fixture
def served(tmp_path):
    """A tiny HTTP server on loopback serving files from a folder; yields (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(folder), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def _closed_port_url(name: str) -> str:
    """A URL on loopback where nothing listens: a real, immediate connection failure."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/{name}"


def _with_files(monkeypatch, name: str, files: tuple) -> None:
    spec = dataclasses.replace(data.REGISTRY[name], files=files)
    monkeypatch.setitem(data.REGISTRY, name, spec)


# --- the registry ------------------------------------------------------------------------------

def test_registry_entries_are_complete():
    for name, spec in data.REGISTRY.items():
        assert spec.name == name
        assert spec.licence and spec.homepage and spec.fallback and spec.description
        for f in spec.files:
            algo, _, digest = f.checksum.partition(":")
            assert algo in ("md5", "sha256") and len(digest) == {"md5": 32, "sha256": 64}[algo], f
            assert f.size > 0 and not f.path.startswith("/")
            assert all(u.startswith(("https://", "http://")) for u in f.urls)


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*mnist"):
        data.fetch("imagenet")
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        data.load_mnist("val")


# --- mirror and cache --------------------------------------------------------------------------

@needs_mirror
def test_mnist_from_the_mirror_then_from_the_cache(fresh_cache):
    root, source = data.fetch("mnist")
    assert source == "mirror"
    for f in data.REGISTRY["mnist"].files:  # unpacked (no .gz), verified, in torchvision's layout
        path = root / f.path
        assert path.is_file() and path.stat().st_size == f.size
        assert data.checksum_of(path) == f.checksum.split(":")[1]
    assert not list(root.rglob("*.part")), "temporary files left behind"
    assert data.fetch("mnist")[1] == "cache"
    test = data.load_mnist("test")
    assert test.source == "cache" and test.images.shape == (10000, 1, 28, 28)
    assert test.images.dtype == torch.uint8 and test.labels.dtype == torch.int64
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    train = data.load_mnist("train")
    assert train.images.shape == (60000, 1, 28, 28) and not train.fallback


def test_corrupt_mirror_file_is_never_installed(fresh_cache, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "MNIST" / "raw").mkdir(parents=True)
    with gzip.open(mirror / "MNIST/raw/t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"not the real labels")
    monkeypatch.setenv("CVDL_DATA_MIRROR", str(mirror))
    spec = data.REGISTRY["mnist"].files[3]
    _with_files(monkeypatch, "mnist", (dataclasses.replace(spec, urls=(_closed_port_url("x.gz"),)),))
    with pytest.raises(data.DatasetUnavailable) as err:
        data.fetch("mnist")
    msg = str(err.value)
    assert "present but unusable: checksum mismatch" in msg
    dest = data.data_root() / spec.path
    assert not dest.exists(), "a file that failed its checksum was installed"
    assert not list(dest.parent.glob("*.part")), "temporary file left behind"


def test_cached_file_that_changed_is_fetched_again(fresh_cache, served, monkeypatch, no_mirror):
    folder, base = served
    payload = b"hello course\n" * 100
    (folder / "hello.txt").write_bytes(payload)
    spec = data.FileSpec("hello/hello.txt", (base + "hello.txt",), "md5:" + hashlib.md5(payload).hexdigest(),
                         len(payload))
    _with_files(monkeypatch, "tinyshakespeare", (spec,))
    assert data.fetch("tinyshakespeare")[1] == "download"
    dest = data.data_root() / spec.path
    dest.write_bytes(b"tampered")  # the marker no longer matches the content...
    (dest.parent / (dest.name + ".verified")).unlink()
    assert data.fetch("tinyshakespeare")[1] == "download"  # ...so it is fetched and verified again
    assert dest.read_bytes() == payload


# --- downloads ---------------------------------------------------------------------------------

def test_download_is_verified_and_renamed(fresh_cache, served, monkeypatch, no_mirror):
    folder, base = served
    payload = os.urandom(300_000)
    (folder / "blob.bin.gz").write_bytes(gzip.compress(payload))
    spec = data.FileSpec("blob/blob.bin", (_closed_port_url("blob.bin.gz"), base + "blob.bin.gz"),
                         "sha256:" + hashlib.sha256(payload).hexdigest(), len(payload), gunzip=True)
    _with_files(monkeypatch, "tinyshakespeare", (spec,))
    root, source = data.fetch("tinyshakespeare")  # the first URL fails, the second works
    assert source == "download"
    assert (root / "blob/blob.bin").read_bytes() == payload
    assert not list((root / "blob").glob("*.part"))


def test_download_with_wrong_checksum_leaves_nothing(fresh_cache, served, monkeypatch, no_mirror):
    folder, base = served
    (folder / "t.txt").write_bytes(b"the wrong content")
    spec = data.FileSpec("t/t.txt", (base + "t.txt",), "md5:" + "0" * 32, 17)
    _with_files(monkeypatch, "tinyshakespeare", (spec,))
    with pytest.raises(data.DatasetUnavailable, match="checksum mismatch"):
        data.fetch("tinyshakespeare")
    assert not (data.data_root() / "t").exists() or not any((data.data_root() / "t").iterdir())


# --- offline, nothing cached: one clear message and the named fallback -------------------------

def _network_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("ossci-datasets.s3.amazonaws.com", 443), timeout=3).close()
        return True
    except OSError:
        return False


def _assert_one_clear_message(text: str, name: str, fallback: str):
    assert text.count(f"Dataset '{name}' is not available") == 1, text
    assert "looked in: cache" in text and "mirror" in text and "download" in text
    assert f"falling back to: {fallback}" in text
    assert "Traceback" not in text and "urllib" not in text


def test_offline_with_nothing_cached_falls_back_with_one_message(fresh_cache, no_mirror, capsys):
    if _network_reachable():
        pytest.skip("the network is reachable here, so MNIST would really download")
    digits = data.load_mnist("train")  # the real registry, the real URLs, no network
    err = capsys.readouterr().err
    _assert_one_clear_message(err, "mnist", data.REGISTRY["mnist"].fallback)
    assert "ossci-datasets.s3.amazonaws.com" in err  # it names where it tried to download from
    assert digits.fallback and digits.source == "fallback: scikit-learn digits"
    assert digits.images.shape[1:] == (1, 28, 28) and digits.images.dtype == torch.uint8
    test = data.load_mnist("test")
    assert "not available" not in capsys.readouterr().err  # said once, not once per split
    assert len(digits) + len(test) == 1797  # a deterministic 80/20 split of the 1 797 digits
    assert set(digits.labels.unique().tolist()) == set(range(10))


def test_unreachable_server_gives_the_same_message(fresh_cache, no_mirror, monkeypatch, capsys):
    """Deterministic twin of the test above: the download URL is a closed port on loopback."""
    files = tuple(dataclasses.replace(f, urls=(_closed_port_url(Path(f.path).name + ".gz"),))
                  for f in data.REGISTRY["mnist"].files)
    _with_files(monkeypatch, "mnist", files)
    out = data.load_mnist("test")
    err = capsys.readouterr().err
    _assert_one_clear_message(err, "mnist", data.REGISTRY["mnist"].fallback)
    assert "ConnectionRefusedError" in err or "Connection refused" in err
    assert "CVDL_DATA_MIRROR is unset" in err
    assert out.fallback


def test_text_falls_back_too(fresh_cache, no_mirror, monkeypatch, capsys):
    spec = data.REGISTRY["tinyshakespeare"].files[0]
    _with_files(monkeypatch, "tinyshakespeare", (dataclasses.replace(spec, urls=(_closed_port_url("input.txt"),)),))
    text = data.load_text()
    _assert_one_clear_message(capsys.readouterr().err, "tinyshakespeare",
                              data.REGISTRY["tinyshakespeare"].fallback)
    assert text.startswith("First Citizen:")


@pytest.mark.skipif(MIRROR is None or not (MIRROR / "tinyshakespeare").is_dir(), reason="no mirror")
def test_tinyshakespeare_from_the_mirror(fresh_cache):
    text = data.load_text("tinyshakespeare")
    assert len(text) == 1115394 and text.startswith("First Citizen:")


@pytest.mark.skipif(MIRROR is None or not (MIRROR / "cifar10").is_dir(), reason="no CIFAR-10 in the mirror")
def test_cifar10_falls_back_to_the_mirrored_test_set(fresh_cache, capsys, monkeypatch):
    spec = data.REGISTRY["cifar10"].files[0]  # keep the test offline-fast even where a network exists
    _with_files(monkeypatch, "cifar10", (dataclasses.replace(spec, urls=(_closed_port_url("c.tar.gz"),)),))
    train, test = data.load_cifar10("train"), data.load_cifar10("test")
    err = capsys.readouterr().err
    assert "Dataset 'cifar10' is not available" in err and "falling back to: the CIFAR-10 test set" in err
    assert train.images.shape == (8000, 3, 32, 32) and test.images.shape == (2000, 3, 32, 32)
    assert train.source.startswith("fallback: CIFAR-10 test set only") and train.classes[0] == "airplane"
    both = torch.cat([train.labels, test.labels])
    assert torch.bincount(both).tolist() == [1000] * 10  # the split partitions the 10 000 images
    assert train.images.float().std() > 30  # real photos, not blanks


# --- always-present images ---------------------------------------------------------------------

@pytest.mark.parametrize("name", data.SKLEARN_PHOTOS + ("astronaut", "camera", "coffee", "chelsea"))
def test_photos_load_without_network(name):
    img = data.load_photo(name)
    assert img.dtype == np.uint8 and img.ndim in (2, 3) and min(img.shape[:2]) >= 256
    assert img.std() > 10


def test_unknown_photo_lists_the_choices():
    with pytest.raises(ValueError, match="unknown photo 'lena'.*china.jpg"):
        data.load_photo("lena")


def test_to_grey_matches_pillow():
    from PIL import Image

    img = data.load_photo("china.jpg")
    ours = data.to_grey(img)
    ref = np.asarray(Image.fromarray(img).convert("L"), dtype=np.float64) / 255.0  # ITU-R 601 luma
    assert ours.shape == img.shape[:2]
    assert np.abs(ours - ref).max() <= 1.0 / 255 + 1e-9
    with pytest.raises(ValueError, match=r"expected an H×W or H×W×3 image, got shape \(4, 4, 5\)"):
        data.to_grey(np.zeros((4, 4, 5)))


def test_to_grey_keeps_float_images_on_their_scale():
    img = data.load_photo("chelsea")
    assert np.allclose(data.to_grey(img / 255.0), data.to_grey(img), atol=1e-12)   # float in [0, 1]: not rescaled
    assert np.allclose(data.to_grey(np.dstack([img, img[..., :1]])), data.to_grey(img))   # alpha ignored
    grey = data.load_photo("camera")
    assert np.array_equal(data.to_grey(grey), grey / 255.0)
    with pytest.raises(TypeError, match="uint8 image.*floating-point.*got dtype int64"):
        data.to_grey(np.zeros((4, 4, 3), dtype=np.int64))


def test_photo_tensor_shapes_range_and_centre_crop():
    full = data.photo_tensor("chelsea")
    raw = data.load_photo("chelsea")                                      # uint8 [300, 451, 3]
    assert full.shape == (1, 3) + raw.shape[:2] and full.dtype == torch.float32
    assert torch.equal(full[0], torch.from_numpy(raw).permute(2, 0, 1).float() / 255)
    small = data.photo_tensor("chelsea", 32)
    assert small.shape == (1, 3, 32, 32) and 0 <= small.min() and small.max() <= 1
    h, w = raw.shape[:2]
    left = (w - h) // 2
    same_size = data.photo_tensor("chelsea", h)                          # the centre square, not resized
    assert torch.allclose(same_size, full[..., :, left:left + h], atol=1e-6)
    assert data.photo_tensor("camera", 16).shape == (1, 3, 16, 16)        # a grey photo as 3 channels
    g = data.photo_tensor("astronaut", 24, grey=True)
    assert g.shape == (1, 1, 24, 24)
    ref = torch.nn.functional.interpolate(torch.from_numpy(data.to_grey(data.load_photo("astronaut"))).float()[None, None],
                                          size=(24, 24), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(g, ref.clamp(0, 1), atol=1e-6)                # astronaut is square: no crop
    with pytest.raises(ValueError, match="unknown photo 'lena'"):
        data.photo_tensor("lena")
    with pytest.raises(ValueError, match="size must be a positive integer, got 0"):
        data.photo_tensor("chelsea", 0)
    with pytest.raises(TypeError, match="size must be a positive integer"):
        data.photo_tensor("chelsea", 32.0)


def test_digits_and_imageset_helpers():
    d = data.load_digits()
    assert d.images.shape == (1797, 1, 8, 8) and int(d.images.max()) == 255
    sub = d.subset(per_class=7, seed=1)
    assert torch.bincount(sub.labels).tolist() == [7] * 10
    assert len(d.subset(100)) == 100 and len(d.subset(None)) == 1797
    assert d.float().max() == 1.0
    with pytest.raises(ValueError, match="subset size must be positive"):
        d.subset(0)
    with pytest.raises(ValueError, match=r"images must be \[N, C, H, W\]"):
        data.ImageSet(torch.zeros(3, 8, 8), torch.zeros(3), [], "x", "y")
    with pytest.raises(ValueError, match=r"labels must be \[N\]"):
        data.ImageSet(torch.zeros(3, 1, 8, 8), torch.zeros(4), [], "x", "y")


def test_status_reads_without_network(fresh_cache, no_mirror):
    rows = {r["dataset"]: r for r in data.status()}
    assert set(rows) == set(data.REGISTRY)
    assert rows["mnist"]["state"] == "download" and rows["mnist"]["fallback"]
    assert rows["cifar10-test"]["state"] == "missing"  # mirror-only file, no mirror set


def test_smoke_flag_parsing(monkeypatch):
    monkeypatch.setenv("CVDL_SMOKE", "yes")
    assert config.is_smoke()
    monkeypatch.setenv("CVDL_SMOKE", "0")
    assert not config.is_smoke()
    monkeypatch.setenv("CVDL_SMOKE", "maybe")
    with pytest.raises(ValueError, match="CVDL_SMOKE must be one of"):
        config.is_smoke()
