"""Segmentation and dense prediction (notebook 11): mean IoU from a confusion matrix, fully
convolutional networks, learnable upsampling, FCN and U-Net.

Masks are integer class maps ``[N, H, W]`` (0 = background, as in :func:`cvdl.detection.canvases`);
a network's scores are ``[N, K, H, W]``. Every from-scratch function here is checked against a
reference in ``tests/test_segment.py`` (scikit-learn's ``confusion_matrix`` and ``jaccard_score``,
``F.interpolate``, the classifier it was made from).

Colourisation as classification (notebook 11, section 4) follows R. Zhang, P. Isola, A. Efros,
*Colorful image colorization*, ECCV 2016: the ab plane of Lab colour quantised into cells
(:func:`ab_bins`, :func:`quantise_ab`), rare colours weighted up (:func:`rebalance_weights`), and
the predicted distribution decoded by its annealed mean (:func:`annealed_mean`).

Sources: J. Long, E. Shelhamer, T. Darrell, *Fully convolutional networks for semantic
segmentation*, CVPR 2015; O. Ronneberger, P. Fischer, T. Brox, *U-Net: convolutional networks for
biomedical image segmentation*, MICCAI 2015; M. Zeiler, R. Fergus, *Visualizing and understanding
convolutional networks*, ECCV 2014 (unpooling with switches).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn as nn

from . import _checks

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy", "boundary_band", "bilinear_kernel",
           "bilinear_upsampler", "convolutionalise", "off_centre", "DoubleConv", "UNet", "FCN", "ab_bins", "quantise_ab",
           "rebalance_weights", "annealed_mean"]


# ----------------------------------------------------------------------------------------------
# Scores: the confusion matrix and IoU
# ----------------------------------------------------------------------------------------------


def confusion_matrix(pred, truth, n_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """Pixel counts ``C[t, p]`` of true class ``t`` predicted as ``p``: int64 ``[K, K]``.

    ``pred`` and ``truth`` are integer class maps of one shape (any shape: ``[N, H, W]``, ``[H, W]``);
    pixels whose truth is ``ignore_index`` are left out. Computed with one ``bincount`` of
    ``t · K + p`` (scikit-learn's ``confusion_matrix`` has the same layout: rows are the truth).
    """
    _checks.positive_int(n_classes=n_classes)
    p, t = torch.as_tensor(pred), torch.as_tensor(truth)
    if p.shape != t.shape:
        raise ValueError(f"pred and truth must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    p, t = p.long().flatten(), t.long().flatten()
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    for name, v in (("pred", p), ("truth", t)):
        if len(v) and (v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"{name} holds class {int(v.min() if v.min() < 0 else v.max())}, outside 0 … {n_classes - 1}")
    return torch.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_per_class(conf) -> torch.Tensor:
    """Each class's IoU from a confusion matrix ``[K, K]`` → float64 ``[K]``:
    ``TP / (TP + FP + FN)`` = ``C[k, k] / (row k + column k − C[k, k])``. A class absent from both
    the prediction and the truth has no IoU: NaN (and :func:`mean_iou` leaves it out)."""
    c = torch.as_tensor(conf, dtype=torch.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"a confusion matrix must be [K, K], got {tuple(c.shape)}")
    tp = c.diagonal()
    union = c.sum(0) + c.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(pred, truth, n_classes: int, ignore_index: int | None = None) -> float:
    """The mean over classes of :func:`iou_per_class` (classes present in neither left out)."""
    iou = iou_per_class(confusion_matrix(pred, truth, n_classes, ignore_index))
    return float(np.nanmean(iou.numpy())) if not torch.isnan(iou).all() else float("nan")


def pixel_accuracy(pred, truth) -> float:
    """The fraction of pixels whose predicted class is the true one."""
    p, t = torch.as_tensor(pred), torch.as_tensor(truth)
    if p.shape != t.shape:
        raise ValueError(f"pred and truth must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
    return float((p == t).double().mean()) if p.numel() else float("nan")


def boundary_band(truth, width: int) -> torch.Tensor:
    """The pixels within ``width`` pixels (chessboard distance) of a class boundary of ``truth``
    (``[N, H, W]`` or ``[H, W]`` integer class maps) → bool of the same shape. A pixel is *on* a
    boundary when one of its four neighbours has another class; the band is that set dilated by a
    ``(2·width + 1)²`` square. Scoring only these pixels (a "trimap", Kohli et al. 2009; used by
    DeepLab) measures how well a segmentation places its edges, which the mean IoU of large
    regions hides."""
    _checks.non_negative_int(width=width)
    t = torch.as_tensor(truth).long()
    squeeze = t.ndim == 2
    if squeeze:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"truth must be [N, H, W] or [H, W], got {tuple(t.shape)}")
    edge = torch.zeros_like(t, dtype=torch.bool)
    dy, dx = t[:, 1:, :] != t[:, :-1, :], t[:, :, 1:] != t[:, :, :-1]
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    band = nn.functional.max_pool2d(edge[:, None].float(), 2 * width + 1, 1, width)[:, 0] > 0 if width else edge
    return band[0] if squeeze else band


# ----------------------------------------------------------------------------------------------
# Upsampling
# ----------------------------------------------------------------------------------------------


def bilinear_kernel(factor: int) -> torch.Tensor:
    """The ``2f − f mod 2`` square kernel with which a stride-``f`` transposed convolution
    performs bilinear upsampling (FCN's initialisation): the outer product of a triangle
    ``1 − |x − c| / f`` with itself → ``[k, k]``."""
    _checks.positive_int(factor=factor)
    k = 2 * factor - factor % 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    tri = 1 - (torch.arange(k, dtype=torch.float64) - centre).abs() / factor   # [k]
    return (tri[:, None] * tri[None, :]).float()


def bilinear_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A ``ConvTranspose2d`` (stride ``factor``, one kernel per channel, no bias) initialised to
    bilinear upsampling by ``factor``: ``[N, C, h, w] → [N, C, f·h, f·w]``. Away from the border it
    equals ``F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)``; it can then
    be trained like any other layer."""
    _checks.positive_int(channels=channels, factor=factor)
    k = 2 * factor - factor % 2
    pad = math.ceil((factor - 1) / 2)
    layer = nn.ConvTranspose2d(channels, channels, k, stride=factor, padding=pad, groups=channels, bias=False,
                               output_padding=factor + 2 * pad - k)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(factor).expand(channels, 1, k, k))
    return layer


# ----------------------------------------------------------------------------------------------
# Convolutionalisation
# ----------------------------------------------------------------------------------------------


def convolutionalise(model) -> nn.Sequential:
    """A :class:`cvdl.models.BaselineCNN` rewritten as a fully convolutional network with the same
    weights: its first fully connected layer (on the ``[c2, 4, 4]`` feature map) becomes a 4 × 4
    convolution, the second a 1 × 1 convolution. On a 28 × 28 image it computes exactly the
    classifier's scores (``[N, K, 1, 1]``); on a larger ``[N, 1, H, W]`` image it returns a map
    ``[N, K, ⌊(H − 28) / 4⌋ + 1, ⌊(W − 28) / 4⌋ + 1]``: at ``(i, j)`` the classifier applied to the
    28 × 28 crop at ``(4i, 4j)`` (the two poolings make its stride 4)."""
    from .models import BaselineCNN

    if not isinstance(model, BaselineCNN):
        raise TypeError(f"convolutionalise takes a cvdl.models.BaselineCNN, got {type(model).__name__}")
    fc1, relu, fc2 = model.classifier
    c2 = model.features[3].out_channels
    conv1 = nn.Conv2d(c2, fc1.out_features, 4)
    conv2 = nn.Conv2d(fc2.in_features, fc2.out_features, 1)
    with torch.no_grad():
        conv1.weight.copy_(fc1.weight.reshape(fc1.out_features, c2, 4, 4))   # Flatten's order: (c, h, w)
        conv1.bias.copy_(fc1.bias)
        conv2.weight.copy_(fc2.weight[:, :, None, None])
        conv2.bias.copy_(fc2.bias)
    layers = [m for m in model.features if not isinstance(m, nn.Flatten)]
    return nn.Sequential(*copy.deepcopy(layers), conv1, nn.ReLU(), conv2)


def off_centre(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """"No digit here" examples for a convolutionalised classifier: each image ``[N, C, H, W]``
    moved 9–14 pixels left, right, up or down (the rest of the frame zero, so part of it leaves
    the frame), or — one time in five — blank. Trained as an extra class, they teach the
    classifier to answer "nothing" unless a digit is centred in its window."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[-1] < 15 or x.shape[-2] < 15:
        raise ValueError(f"images must be [N, C, H, W] with H, W >= 15, got {tuple(x.shape)}")
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(9, 15, (len(x),), generator=g).tolist()
    side = torch.randint(0, 5, (len(x),), generator=g).tolist()
    out = torch.zeros_like(x)
    for i, (s, k) in enumerate(zip(shift, side)):
        if k == 0:
            out[i, :, :, s:] = x[i, :, :, :-s]        # moved right
        elif k == 1:
            out[i, :, :, :-s] = x[i, :, :, s:]        # left
        elif k == 2:
            out[i, :, s:, :] = x[i, :, :-s, :]        # down
        elif k == 3:
            out[i, :, :-s, :] = x[i, :, s:, :]        # up; k == 4: blank
    return out


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------


class DoubleConv(nn.Sequential):
    """U-Net's block: two 3 × 3 convolutions (padded, so the size is kept), each followed by batch
    normalisation and ReLU: ``[N, C_in, H, W] → [N, C_out, H, W]``."""

    def __init__(self, c_in: int, c_out: int):
        _checks.positive_int(c_in=c_in, c_out=c_out)
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net: an encoder of :class:`DoubleConv` blocks with 2 × 2 max-pooling, a decoder
    that upsamples (2 × 2 transposed convolution), **concatenates** the encoder's map of the same
    size (the skip connection) and applies a :class:`DoubleConv`, then a 1 × 1 convolution to
    ``n_classes`` scores: ``[N, C, H, W] → [N, K, H, W]`` (``H``, ``W`` divisible by
    ``2 ** (len(widths) − 1)``). ``skips=False`` drops the concatenations (the same decoder fed
    only from below) — the control for what the skips carry."""

    def __init__(self, n_classes: int, in_channels: int = 3, widths=(16, 32, 64), skips: bool = True):
        _checks.positive_int(n_classes=n_classes, in_channels=in_channels)
        if len(widths) < 2:
            raise ValueError(f"widths needs at least two levels, got {widths}")
        super().__init__()
        self.skips = skips
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.down.append(DoubleConv(c, w))
            c = w
        self.up, self.merge = nn.ModuleList(), nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(c, w, 2, stride=2))
            self.merge.append(DoubleConv(2 * w if skips else w, w))
            c = w
        self.head = nn.Conv2d(c, n_classes, 1)
        self.levels = len(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = 2 ** (self.levels - 1)
        if x.ndim != 4 or x.shape[-1] % step or x.shape[-2] % step:
            raise ValueError(f"UNet needs [N, C, H, W] with H and W divisible by {step}, got {tuple(x.shape)}")
        saved = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else nn.functional.max_pool2d(x, 2))
            saved.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(saved[:-1])):
            x = up(x)                                                   # [N, w, 2h, 2w]
            x = merge(torch.cat([skip, x], 1) if self.skips else x)
        return self.head(x)


class FCN(nn.Module):
    """A small fully convolutional network in FCN's manner: a stride-8 encoder (three
    :class:`DoubleConv` + pooling stages), 1 × 1 class scores at stride 8, upsampled to the input
    size by :func:`bilinear_upsampler` layers (trainable). ``skips=True`` is FCN-8s's idea: the
    coarse scores are upsampled ×2 and **added** to scores read off the stride-4 map, again ×2 and
    added to the stride-2 map's, then ×2 to full size; ``skips=False`` upsamples the stride-8
    scores ×8 in one go (FCN-32s's way). ``[N, C, H, W] → [N, K, H, W]``, ``H``, ``W`` divisible by 8."""

    def __init__(self, n_classes: int, in_channels: int = 3, widths=(16, 32, 64), skips: bool = True):
        _checks.positive_int(n_classes=n_classes, in_channels=in_channels)
        if len(widths) != 3:
            raise ValueError(f"FCN takes three widths (strides 2, 4, 8), got {widths}")
        super().__init__()
        self.skips = skips
        c, self.stages = in_channels, nn.ModuleList()
        for w in widths:
            self.stages.append(DoubleConv(c, w))
            c = w
        # class scores at strides 2, 4, 8 (without skips only the stride-8 ones exist)
        self.score = nn.ModuleList(nn.Conv2d(w, n_classes, 1) if skips or i == 2 else nn.Identity()
                                   for i, w in enumerate(widths))
        if skips:
            self.up = nn.ModuleList(bilinear_upsampler(n_classes, 2) for _ in range(3))
        else:
            self.up = nn.ModuleList([bilinear_upsampler(n_classes, 8)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"FCN needs [N, C, H, W] with H and W divisible by 8, got {tuple(x.shape)}")
        maps = []
        for stage in self.stages:
            x = nn.functional.max_pool2d(stage(x), 2)                    # strides 2, 4, 8
            maps.append(x)
        if not self.skips:
            return self.up[0](self.score[2](maps[2]))
        s = self.up[0](self.score[2](maps[2])) + self.score[1](maps[1])   # stride 4
        s = self.up[1](s) + self.score[0](maps[0])                        # stride 2
        return self.up[2](s)                                              # stride 1


# ----------------------------------------------------------------------------------------------
# Colourisation as classification over colour bins (Zhang et al. 2016)
# ----------------------------------------------------------------------------------------------


def _ab_pixels(ab) -> torch.Tensor:
    t = torch.as_tensor(ab, dtype=torch.float32)
    if t.ndim != 4 or t.shape[1] != 2:
        raise ValueError(f"ab must be [N, 2, H, W] (the a and b channels of Lab), got {tuple(t.shape)}")
    return t.permute(0, 2, 3, 1).reshape(-1, 2)


def ab_bins(ab, step: float = 10.0) -> torch.Tensor:
    """The centres ``[Q, 2]`` of the ``step × step`` cells of the ab plane (a and b in about
    −110 … 110) that hold at least one pixel of ``ab`` ``[N, 2, H, W]``: the colours seen in
    training. As in Zhang et al. (who keep the 313 in-gamut cells of a grid of 10) the centres
    are the multiples of ``step`` — grey, (0, 0), is one of them — and a pixel's cell is the one
    whose centre is nearest (``round(ab / step)``). Sorted by (a, b)."""
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    cells = torch.unique(torch.round(_ab_pixels(ab) / step).long(), dim=0)        # [Q, 2], sorted
    return cells.float() * step


def quantise_ab(ab, centres, chunk: int = 65536) -> torch.Tensor:
    """Each pixel's nearest bin centre (Euclidean in ab): ``[N, 2, H, W]`` → int64 ``[N, H, W]``.
    Hard labels: the paper soft-encodes each pixel over its 5 nearest bins (a Gaussian of σ = 5);
    left out here. (``cdist`` may compute large batches by a matrix product, so a pixel exactly
    half-way between two centres can go either way.)"""
    t = torch.as_tensor(ab, dtype=torch.float32)
    px, c = _ab_pixels(t), torch.as_tensor(centres, dtype=torch.float32)
    if c.ndim != 2 or c.shape[1] != 2 or len(c) == 0:
        raise ValueError(f"centres must be [Q, 2] with Q >= 1, got {tuple(c.shape)}")
    out = torch.cat([torch.cdist(px[i:i + chunk], c).argmin(1) for i in range(0, len(px), chunk)]) if len(px) \
        else torch.zeros(0, dtype=torch.int64)
    return out.reshape(t.shape[0], t.shape[2], t.shape[3])


def rebalance_weights(labels, n_bins: int, lam: float = 0.5) -> torch.Tensor:
    """Zhang et al.'s class weights for the bins: ``w ∝ ((1 − λ)·p + λ / Q)⁻¹`` with ``p`` the
    bins' frequencies in ``labels``, scaled so that the expected weight ``Σ p·w`` is 1. ``λ = 1``
    gives equal weights; ``λ → 0`` weights each bin by the inverse of its frequency. The paper
    also smooths ``p`` with a Gaussian; left out here."""
    _checks.positive_int(n_bins=n_bins)
    if not 0 < lam <= 1:
        raise ValueError(f"lam must be in (0, 1], got {lam}")
    labels = torch.as_tensor(labels).long().flatten()
    if len(labels) and labels.min() < 0:
        raise ValueError(f"labels must be bin indices 0 … {n_bins - 1}, got {int(labels.min())}")
    p = torch.bincount(labels, minlength=n_bins).double()
    if len(p) > n_bins:
        raise ValueError(f"labels hold bin {len(p) - 1}, outside 0 … {n_bins - 1}")
    p = p / p.sum().clamp(min=1)
    w = 1 / ((1 - lam) * p + lam / n_bins)
    return (w / (p * w).sum().clamp(min=1e-30) if p.sum() > 0 else w / w.mean()).float()


def annealed_mean(logits, centres, temperature: float = 0.38) -> torch.Tensor:
    """Decode bin scores ``[N, Q, H, W]`` into colours ``[N, 2, H, W]``: the mean of the bin centres
    under the distribution sharpened by ``temperature`` (``softmax(logits / T)``, the paper's
    re-normalised ``exp(log p / T)``). ``T = 1`` is the plain mean (greyish where colours are
    uncertain); ``T → 0`` the most likely bin (vivid but patchy); the paper takes 0.38."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = torch.as_tensor(logits)
    c = torch.as_tensor(centres, dtype=z.dtype, device=z.device)
    if z.ndim != 4 or z.shape[1] != len(c):
        raise ValueError(f"logits must be [N, Q, H, W] with Q = {len(c)} bins, got {tuple(z.shape)}")
    return torch.einsum("nqhw,qc->nchw", torch.softmax(z / temperature, 1), c)
