"""The course's classifiers, from a linear score function to residual blocks (notebook 03).

- :func:`linear_classifier` — ``f = W x + b`` on the flattened image;
- :func:`two_layer_net` — ``f = W2 max(0, W1 x)``;
- :func:`make_cnn` — the ``[(CONV-RELU)*N-POOL?]*M-(FC-RELU)*K`` pattern (CS231n) as an
  ``nn.Sequential``, followed by a final FC layer that gives the class scores (the softmax lives
  in the loss, :func:`torch.nn.functional.cross_entropy`);
- :class:`ResidualBlock` — He et al. (2016): two 3×3 convolutions with batch norm, added to an
  identity (or 1×1-projection) shortcut;
- :class:`BaselineCNN` — the small CNN notebook 03 trains on MNIST;
- :class:`Normalize` — ``(x − mean) / std`` as the first layer, so that a model takes raw pixels;
- :func:`count_params`, :func:`conv_params`, :func:`fc_params` — parameter counts, measured and
  by formula (:func:`conv_params` is :func:`cvdl.arith.conv_params`);
- :func:`softmax`, :func:`cross_entropy` — from scratch, checked against PyTorch in the tests.

>>> model = make_cnn("[(CONV-RELU)*2-POOL]*2-(FC-RELU)*1", channels=(16, 32), hidden=64)
>>> model(torch.zeros(8, 1, 28, 28)).shape
torch.Size([8, 10])
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import torch
import torch.nn as nn

from . import _checks
from .arith import conv_params

__all__ = [
    "count_params", "fc_params", "conv_params", "softmax", "cross_entropy", "linear_classifier",
    "two_layer_net", "parse_pattern", "format_pattern", "make_cnn", "layer_string", "ResidualBlock",
    "small_resnet", "BaselineCNN", "Normalize",
]

# ----------------------------------------------------------------------------------------------
# Parameter counts
# ----------------------------------------------------------------------------------------------


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    _checks.module(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def fc_params(in_features: int, out_features: int, bias: bool = True) -> int:
    """Parameters of a fully connected layer: ``in·out`` weights ``+ out`` biases."""
    _checks.positive_int(in_features=in_features, out_features=out_features)
    return in_features * out_features + (out_features if bias else 0)


# ----------------------------------------------------------------------------------------------
# Softmax and cross-entropy from scratch
# ----------------------------------------------------------------------------------------------


def softmax(scores: torch.Tensor) -> torch.Tensor:
    """``softmax(s)_i = exp(s_i) / Σ_j exp(s_j)`` along the last dimension.

    ``scores``: ``[..., C]``. The maximum is subtracted first (the result is unchanged, and
    ``exp`` cannot overflow). Returns probabilities ``[..., C]`` summing to 1.
    """
    if not isinstance(scores, torch.Tensor) or scores.ndim < 1 or scores.shape[-1] == 0:
        raise ValueError(f"scores must be a tensor [..., C] with C >= 1, got "
                         f"{getattr(scores, 'shape', type(scores).__name__)}")
    shifted = scores - scores.max(dim=-1, keepdim=True).values  # [..., C], max is 0
    e = shifted.exp()
    return e / e.sum(dim=-1, keepdim=True)


def cross_entropy(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy ``-(1/N) Σ_n log softmax(s_n)[y_n]`` (what ``F.cross_entropy`` computes).

    ``scores``: ``[N, C]`` unnormalised class scores (logits); ``labels``: int64 ``[N]`` in
    ``0..C-1``. Uses ``log softmax(s)_y = s_y - max(s) - log Σ_j exp(s_j - max(s))``.
    """
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
        raise ValueError(f"scores must be a tensor [N, C], got {getattr(scores, 'shape', type(scores).__name__)}")
    if not isinstance(labels, torch.Tensor) or labels.shape != scores.shape[:1]:
        raise ValueError(f"labels must be a tensor [N] = [{scores.shape[0]}], got "
                         f"{getattr(labels, 'shape', type(labels).__name__)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if len(labels) == 0:
        raise ValueError("cross_entropy of an empty batch is undefined (N = 0)")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must lie in 0..{scores.shape[1] - 1}, got values in "
                         f"{labels.min().item()}..{labels.max().item()}")
    shifted = scores - scores.max(dim=1, keepdim=True).values  # [N, C]
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()  # [N, C]
    return -log_probs.gather(1, labels[:, None]).mean()


# ----------------------------------------------------------------------------------------------
# Linear classifier and 2-layer net
# ----------------------------------------------------------------------------------------------


def _in_features(in_shape) -> int:
    if isinstance(in_shape, int):
        _checks.positive_int(in_shape=in_shape)
        return in_shape
    if not isinstance(in_shape, (tuple, list)) or not in_shape:
        raise ValueError(f"in_shape must be an int or a shape like (1, 28, 28), got {in_shape!r}")
    _checks.positive_int(**{f"in_shape[{i}]": s for i, s in enumerate(in_shape)})
    return math.prod(in_shape)


def linear_classifier(in_shape: int | Sequence[int] = (1, 28, 28), num_classes: int = 10,
                      bias: bool = True) -> nn.Sequential:
    """``f(x) = W x + b``: one score per class from the flattened image.

    Input ``[N, *in_shape]`` → scores ``[N, num_classes]``. ``W`` is ``[num_classes, D]`` with
    ``D = prod(in_shape)``, so each row of ``W`` is a *template* the size of the image.
    """
    d = _in_features(in_shape)
    _checks.positive_int(num_classes=num_classes)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, num_classes, bias=bias))


def two_layer_net(in_shape: int | Sequence[int] = (1, 28, 28), hidden: int = 256,
                  num_classes: int = 10) -> nn.Sequential:
    """``f(x) = W2 max(0, W1 x + b1) + b2``: input ``[N, *in_shape]`` → scores ``[N, num_classes]``."""
    d = _in_features(in_shape)
    _checks.positive_int(hidden=hidden, num_classes=num_classes)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


# ----------------------------------------------------------------------------------------------
# The [(CONV-RELU)*N-POOL?]*M-(FC-RELU)*K pattern
# ----------------------------------------------------------------------------------------------

_PATTERN = re.compile(
    r"^\[\(CONV-RELU\)\*(?P<n>\d+)(?P<pool>-POOL\??)?\]\*(?P<m>\d+)"
    r"(?:-\(FC-RELU\)\*(?P<k>\d+))?(?:\s*[-,]\s*(?:FC|SOFTMAX))?$")


def parse_pattern(pattern: str) -> tuple[int, int, int, bool]:
    """``"[(CONV-RELU)*N-POOL]*M-(FC-RELU)*K"`` → ``(N, M, K, pool)``.

    ``-POOL`` may be left out (no pooling) or written ``-POOL?`` (pooling, as on the slide);
    ``-(FC-RELU)*K`` may be left out (K = 0); a trailing ``-FC`` or ``, SOFTMAX`` is accepted
    (the final class-score layer is always added). Spaces are ignored, case is not.
    """
    if not isinstance(pattern, str):
        raise ValueError(f"pattern must be a string, got {type(pattern).__name__}")
    compact = pattern.replace(" ", "").upper()
    match = _PATTERN.match(compact.replace(",SOFTMAX", "-SOFTMAX"))
    if match is None:
        raise ValueError(f"pattern must look like '[(CONV-RELU)*N-POOL]*M-(FC-RELU)*K', got {pattern!r}")
    n, m, k = int(match["n"]), int(match["m"]), int(match["k"] or 0)
    return n, m, k, match["pool"] is not None


def format_pattern(n: int, m: int, k: int, pool: bool = True) -> str:
    """The pattern string for ``N, M, K`` (inverse of :func:`parse_pattern`)."""
    return f"[(CONV-RELU)*{n}{'-POOL' if pool else ''}]*{m}-(FC-RELU)*{k}"


def _per_block(value, count: int, name: str, doubling: bool) -> list[int]:
    """An int (doubled at each block if ``doubling``) or a sequence of ``count`` ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        _checks.positive_int(**{name: value})
        return [value * (2 ** i if doubling else 1) for i in range(count)]
    if isinstance(value, (tuple, list)):
        if len(value) != count:
            raise ValueError(f"{name} must have one entry per block ({count}), got {len(value)}: {value!r}")
        _checks.positive_int(**{f"{name}[{i}]": v for i, v in enumerate(value)})
        return list(value)
    raise ValueError(f"{name} must be a positive int or a sequence of {count} ints, got {value!r}")


def make_cnn(pattern: str | int = 2, m: int | None = None, k: int | None = None, *,
             channels: int | Sequence[int] = 16, hidden: int | Sequence[int] = 128,
             in_channels: int = 1, image_size: int | tuple[int, int] = 28, num_classes: int = 10,
             kernel_size: int = 3, pool: bool = True, batch_norm: bool = False,
             dropout: float = 0.0) -> nn.Sequential:
    """Build ``[(CONV-RELU)*N-POOL?]*M-(FC-RELU)*K`` followed by ``FC → num_classes``.

    Call it with the pattern string, ``make_cnn("[(CONV-RELU)*2-POOL]*2-(FC-RELU)*1")``, or with
    numbers, ``make_cnn(2, 2, 1)`` (``pattern`` is then ``N``, and ``m``, ``k`` are required).

    - ``channels``: output channels of block ``i`` (all ``N`` convolutions of the block have
      them); an int means ``channels · 2**i``, or give ``M`` values.
    - ``hidden``: width of each of the ``K`` FC-ReLU layers (an int, or ``K`` values).
    - convolutions are ``kernel_size × kernel_size``, stride 1, "same" padding ``(k-1)/2``;
      ``POOL`` is a 2×2 max-pool with stride 2 (halves H and W, rounding down);
      ``batch_norm`` puts a ``BatchNorm2d`` between each CONV and its RELU;
      ``dropout > 0`` puts a ``Dropout`` before each FC layer.

    Input ``[N, in_channels, H, W]`` (``image_size`` = ``H`` or ``(H, W)``) → scores
    ``[N, num_classes]``. The softmax is not part of the model: ``F.cross_entropy`` applies it.
    """
    if isinstance(pattern, str):
        if m is not None or k is not None:
            raise ValueError("give either a pattern string or the numbers N, M, K — not both "
                             f"(got pattern={pattern!r}, m={m!r}, k={k!r})")
        n, m, k, pool = parse_pattern(pattern)
    elif isinstance(pattern, int) and not isinstance(pattern, bool):
        if m is None or k is None:
            raise ValueError(f"with N = {pattern} as a number, give M and K too (got m={m!r}, k={k!r})")
        n = pattern
    else:
        raise ValueError(f"pattern must be a pattern string or the integer N, got {pattern!r}")
    _checks.non_negative_int(N=n, M=m, K=k)
    if n == 0 and m > 0:
        raise ValueError(f"a conv block needs at least one CONV-RELU (N >= 1) when M = {m} > 0, got N = 0")
    _checks.positive_int(in_channels=in_channels, num_classes=num_classes, kernel_size=kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd so that 'same' padding (k-1)/2 keeps the size, got {kernel_size}")
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    _checks.positive_int(height=h, width=w)
    chans = _per_block(channels, m, "channels", doubling=True) if m else []
    widths = _per_block(hidden, k, "hidden", doubling=False) if k else []
    if pool and (h >> m == 0 or w >> m == 0):
        raise ValueError(f"{m} 2×2 poolings shrink a {h}×{w} image to nothing "
                         f"({h}×{w} → {h >> m}×{w >> m}); use fewer blocks or pool=False")

    layers: list[nn.Module] = []
    c = in_channels
    for block in range(m):
        for _ in range(n):
            layers.append(nn.Conv2d(c, chans[block], kernel_size, padding=kernel_size // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(chans[block]))
            layers.append(nn.ReLU())
            c = chans[block]
        if pool:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
    layers.append(nn.Flatten())
    features = c * h * w  # [N, C, H, W] → [N, C·H·W]
    for width in widths:
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def layer_string(model: nn.Module) -> str:
    """The model's layers in the slide's notation, e.g. ``CONV-RELU-CONV-RELU-POOL-FC-RELU-FC``
    (``Flatten`` and unknown layers are left out; nested ``Sequential`` parts are walked)."""
    names = {nn.Conv2d: "CONV", nn.ReLU: "RELU", nn.MaxPool2d: "POOL", nn.Linear: "FC",
             nn.BatchNorm2d: "BN", nn.Dropout: "DROPOUT", nn.AdaptiveAvgPool2d: "AVGPOOL",
             ResidualBlock: "RES"}
    out = []
    for mod in model.children():
        if type(mod) in names:
            out.append(names[type(mod)])
        elif isinstance(mod, nn.Sequential):  # e.g. BaselineCNN's features / classifier
            out += [s for s in layer_string(mod).split("-") if s]
    return "-".join(out)


# ----------------------------------------------------------------------------------------------
# Residual block
# ----------------------------------------------------------------------------------------------


class ResidualBlock(nn.Module):
    """``y = ReLU(F(x) + shortcut(x))`` with ``F = conv3×3 → BN → ReLU → conv3×3 → BN`` (He et al. 2016).

    Input ``[N, in_channels, H, W]`` → output ``[N, out_channels, ⌈H/stride⌉, ⌈W/stride⌉]``.
    The shortcut is the identity when the shapes agree (``in_channels == out_channels`` and
    ``stride == 1``), otherwise a 1×1 convolution with that stride followed by BN (the paper's
    "projection shortcut", option B). ``zero_init=True`` zeroes the last BN's scale, so the block
    starts as ``ReLU(shortcut(x))`` — the identity on non-negative inputs (Goyal et al. 2017).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, stride: int = 1,
                 zero_init: bool = False):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        _checks.positive_int(in_channels=in_channels, out_channels=out_channels, stride=stride)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()
        if zero_init:
            nn.init.zeros_(self.bn2.weight)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch ``F(x)``: ``[N, C_in, H, W]`` → ``[N, C_out, H', W']``."""
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.conv1.in_channels:
            raise ValueError(f"expected input [N, {self.conv1.in_channels}, H, W], got {tuple(x.shape)}")
        return torch.relu(self.residual(x) + self.shortcut(x))


def small_resnet(channels: Sequence[int] = (16, 32, 64), in_channels: int = 1,
                 num_classes: int = 10) -> nn.Sequential:
    """A stem conv, one :class:`ResidualBlock` per entry of ``channels`` (stride 2 after the
    first), global average pooling and an FC layer: ``[N, in_channels, H, W]`` → ``[N, num_classes]``."""
    if not isinstance(channels, (tuple, list)) or not channels:
        raise ValueError(f"channels must be a non-empty sequence of ints, got {channels!r}")
    _checks.positive_int(in_channels=in_channels, num_classes=num_classes,
                    **{f"channels[{i}]": c for i, c in enumerate(channels)})
    layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False),
                               nn.BatchNorm2d(channels[0]), nn.ReLU()]
    c = channels[0]
    for i, out in enumerate(channels):
        layers.append(ResidualBlock(c, out, stride=1 if i == 0 else 2))
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------
# The MNIST baseline
# ----------------------------------------------------------------------------------------------


class BaselineCNN(nn.Module):
    """The notebook's MNIST baseline: ``[CONV-RELU-POOL]*2-FC-RELU-FC`` with 5×5 filters.

    LeNet-5's layout with ReLU and max-pooling (LeCun et al. 1998), in two parts so that the
    feature extractor can be reused (fine-tuning) and the classifier replaced:

    - ``features``: ``[N, 1, 28, 28]`` → conv 5×5 (no padding) → ``[N, c1, 24, 24]`` → pool →
      ``[N, c1, 12, 12]`` → conv 5×5 → ``[N, c2, 8, 8]`` → pool → ``[N, c2, 4, 4]`` → flatten →
      ``[N, 16·c2]``;
    - ``classifier``: FC → ``[N, hidden]`` → ReLU → FC → ``[N, num_classes]`` (class scores).
    """

    def __init__(self, c1: int = 32, c2: int = 64, hidden: int = 128, num_classes: int = 10):
        _checks.positive_int(c1=c1, c2=c2, hidden=hidden, num_classes=num_classes)
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5), nn.ReLU(), nn.MaxPool2d(2),   # [N, c1, 12, 12]
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),  # [N, c2, 4, 4]
            nn.Flatten())                                      # [N, 16·c2]
        self.classifier = nn.Sequential(nn.Linear(16 * c2, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"BaselineCNN expects MNIST-sized input [N, 1, 28, 28], got {tuple(x.shape)}")
        return self.classifier(self.features(x))


# ----------------------------------------------------------------------------------------------
# Input normalisation as a layer
# ----------------------------------------------------------------------------------------------


def _statistic(value, name: str, check) -> torch.Tensor:
    """A number → a 0-d tensor; a sequence of ``C`` numbers → ``[C, 1, 1]`` (broadcasts over H, W)."""
    if isinstance(value, (tuple, list)):
        if not value:
            raise ValueError(f"{name} must be a number or one number per channel, got an empty {type(value).__name__}")
        check(**{f"{name}[{c}]": v for c, v in enumerate(value)})
        return torch.tensor([float(v) for v in value])[:, None, None]   # [C, 1, 1]
    check(**{name: value})
    return torch.tensor(float(value))                                  # 0-d: every channel


class Normalize(nn.Module):
    """``(x − mean) / std`` as a layer, so that a model takes raw pixels in [0, 1].

    ``mean``, ``std``: one number for every channel (stored as 0-d buffers), or one number per
    channel (sequences of length ``C``, stored as ``[C, 1, 1]`` buffers); one of each kind may be
    mixed. The buffers follow ``.to(device, dtype)`` and are saved in the ``state_dict``.
    Input ``x (Tensor[N, C, H, W])`` (any ``[..., C, H, W]``) → the same shape.

    >>> Normalize(0.1307, 0.3081)                                   # MNIST: one mean and std
    Normalize(mean=0.1307, std=0.3081)
    >>> Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))      # ImageNet: per channel
    Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

    Raises:
        TypeError: for a mean or std that is not a number (or a sequence of numbers).
        ValueError: for a std ``<= 0``, a non-finite mean, or per-channel sequences of
            different lengths; in ``forward``, for an input whose channels do not match them.
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]):
        super().__init__()
        self.register_buffer("mean", _statistic(mean, "mean", _checks.finite))
        self.register_buffer("std", _statistic(std, "std", _checks.positive))
        if self.mean.ndim and self.std.ndim and len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must have the same number of channels, got {len(self.mean)} "
                             f"means {tuple(mean)} and {len(self.std)} stds {tuple(std)}")

    @property
    def channels(self) -> int | None:
        """The number of channels the statistics are for (None: one number for every channel)."""
        per_channel = [len(t) for t in (self.mean, self.std) if t.ndim]
        return per_channel[0] if per_channel else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.channels
        if c is not None and (x.ndim < 3 or x.shape[-3] != c):
            raise ValueError(f"Normalize has statistics for {c} channels; expected x [N, {c}, H, W], "
                             f"got {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        def fmt(t: torch.Tensor) -> str:
            if t.ndim == 0:
                return f"{t.item():.4g}"
            return "(" + ", ".join(f"{v:.4g}" for v in t.flatten().tolist()) + ")"
        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"
