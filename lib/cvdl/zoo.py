"""Networks to look inside: ImageNet-pretrained when available, trained in-course otherwise.

- :func:`torchvision_model` — a torchvision model with its ImageNet weights when they are in the
  torch cache or downloadable; ``None`` and one clear message otherwise (never a traceback).
- :func:`course_classifier` — a CNN trained in-course on MNIST or CIFAR-10 with
  :func:`cvdl.train.fit`: the checkpoint is loaded when it exists for the same settings,
  trained and saved when it does not.

>>> vgg, note = torchvision_model("vgg16")            # (None, "...not available...") offline
>>> net, info = course_classifier("mnist", smoke=False)
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .device import get_device


def _hub_checkpoint(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def torchvision_model(name: str, weights: str = "DEFAULT", download: bool = True,
                      device: torch.device | str | None = None) -> tuple[nn.Module | None, str]:
    """``(model in eval mode, note)`` with ImageNet weights, or ``(None, note)`` when unavailable.

    The weights are looked for in the torch cache (``torch.hub.get_dir()/checkpoints``) and, if
    ``download`` is True, downloaded. ``note`` says which happened; print it.
    """
    from torchvision.models import get_model, get_model_weights, list_models

    if name not in list_models():
        raise ValueError(f"unknown torchvision model {name!r}; e.g. 'vgg16', 'vgg19', 'resnet18', 'alexnet'")
    enum = get_model_weights(name)
    try:
        w = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise ValueError(f"model {name!r} has no weights {weights!r}; choose from "
                         f"{['DEFAULT'] + [m.name for m in enum]}") from None
    path = _hub_checkpoint(w.url)
    if not path.is_file() and not download:
        return None, (f"ImageNet weights for {name} are not in the torch cache ({path}) and downloading "
                      "was not allowed; using the course's own networks instead.")
    where = "torch cache" if path.is_file() else "download"
    try:
        if not path.is_file():  # fetch the weights before building a (possibly huge) model
            w.get_state_dict(progress=True)
        model = get_model(name, weights=w)
    except Exception as err:  # offline: one line, not a traceback from inside urllib
        reason = getattr(err, "reason", None) or err
        return None, (f"ImageNet weights for {name} are not available: not in the torch cache ({path}) "
                      f"and the download failed ({type(err).__name__}: {reason}); using the course's "
                      "own networks instead.")
    model = model.to(device if device is not None else get_device()).eval()
    return model, f"using torchvision's {name} with ImageNet weights {w.name} ({where}: {path})"


@dataclass
class CourseNet:
    """What :func:`course_classifier` trained (or loaded) and how well it does."""

    dataset: str
    source: str          # the dataset's source (cache / mirror / download / fallback: ...)
    test_acc: float
    loaded: bool         # True when the checkpoint was loaded instead of training
    seconds: float       # training time of the original run
    classes: list[str]
    mean: float          # input normalisation used by the network
    std: float

    def __str__(self) -> str:
        how = "loaded from checkpoint" if self.loaded else "trained now"
        return (f"course {self.dataset} CNN ({how}, {self.seconds:.0f} s of training): "
                f"test accuracy {self.test_acc:.2%} on data from {self.source}")


# The recipes: one place, so every notebook that needs "the MNIST CNN" gets the same network.
_RECIPES = {
    "mnist": dict(epochs=4, lr=3e-3, batch_size=128, smoke_train=1000, smoke_epochs=1),
    "cifar10": dict(epochs=20, lr=3e-3, batch_size=128, smoke_train=640, smoke_epochs=1),  # ≥ 5 batches: OneCycleLR needs them
}


def _cifar_cnn(num_classes: int = 10, width: int = 32) -> nn.Sequential:
    """A VGG-style CIFAR-10 network: ``[B,3,32,32]`` → ``[B,num_classes]`` (3 conv blocks, BN)."""
    w = width
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2)]
    return nn.Sequential(*block(3, w), *block(w, 2 * w), *block(2 * w, 4 * w),  # [B,4w,4,4]
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))


def course_classifier(dataset: str = "mnist", smoke: bool = False, device: torch.device | str | None = None,
                      seed: int = 0, progress: bool = True) -> tuple[nn.Module, CourseNet]:
    """A CNN trained in-course on ``dataset`` (``"mnist"`` or ``"cifar10"``), in eval mode.

    Inputs are float images in [0, 1] (``ImageSet.float()``); the network normalises them itself
    (its first layer), so gradients with respect to the input are in pixel units — what the
    visualisation and attack notebooks need. ``smoke`` trains a small, quick version (its own
    checkpoint). Loaded from the checkpoint cache when it exists.
    """
    from . import data, train
    from .models import BaselineCNN

    if dataset not in _RECIPES:
        raise ValueError(f"dataset must be one of {sorted(_RECIPES)}, got {dataset!r}")
    r = _RECIPES[dataset]
    device = torch.device(device) if device is not None else get_device()
    tr = data.load_mnist("train") if dataset == "mnist" else data.load_cifar10("train")
    te = data.load_mnist("test") if dataset == "mnist" else data.load_cifar10("test")
    if smoke:
        tr, te = tr.subset(r["smoke_train"], seed=seed), te.subset(500, seed=seed)
    x, xt = tr.float(), te.float()
    mean, std = float(x.mean()), float(x.std())
    torch.manual_seed(seed)
    body = BaselineCNN() if dataset == "mnist" else _cifar_cnn(len(tr.classes), width=8 if smoke else 32)
    if dataset == "mnist" and tr.images.shape[-1] != 28:
        raise ValueError(f"the MNIST network expects 28×28 images, got {tuple(tr.images.shape[-2:])}")
    model = nn.Sequential(Normalize(mean, std), body)
    hist = train.fit(model, (x, tr.labels), (xt, te.labels), epochs=r["smoke_epochs"] if smoke else r["epochs"],
                     lr=r["lr"], batch_size=r["batch_size"], device=device, seed=seed, progress=progress,
                     checkpoint=f"zoo-{dataset}{'-smoke' if smoke else ''}")
    acc = hist.last.get("val_acc", float("nan"))
    info = CourseNet(dataset, tr.source, acc, hist.loaded, hist.seconds, list(tr.classes), mean, std)
    return model.eval(), info


class Normalize(nn.Module):
    """``(x - mean) / std`` as a layer, so a model takes raw [0, 1] pixels."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.item():.4f}, std={self.std.item():.4f}"


def say(note: str) -> None:
    """Print a note about which network is used (stdout, so it sits in the notebook's output)."""
    print(note, file=sys.stdout, flush=True)
