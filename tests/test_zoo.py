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
    model2, info2 = zoo.course_classifier("mnist", smoke=True, device="cpu", progress=False)
    assert info2.loaded and info2.test_acc == info.test_acc
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), model2(x))
    assert "test accuracy" in str(info2) and "loaded from checkpoint" in str(info2)


def test_normalize_layer():
    n = zoo.Normalize(0.5, 0.25)
    assert torch.allclose(n(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-2.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="std must be positive"):
        zoo.Normalize(0.0, 0.0)
