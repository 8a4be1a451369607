"""Inverting representations and deep art (notebook 05).

Every piece here is an optimisation over the *pixels* of an image, through a fixed network:

- :class:`FeatureExtractor` — the activations of named layers (forward hooks; stops early);
- :func:`total_variation` — ``TV^β(x) = Σ_ij ((x_{i,j+1} − x_ij)² + (x_{i+1,j} − x_ij)²)^{β/2}``;
- :func:`alpha_norm` — ``‖x‖_α^α = Σ |x|^α``;
- :func:`feature_loss`, :func:`invert` — feature inversion (Mahendran & Vedaldi 2015):
  ``min_x ‖Φ(x) − Φ₀‖² / ‖Φ₀‖² + λ_α R_α(x) + λ_V R_{V^β}(x)``;
- :class:`UpconvDecoder` — a network trained to invert a network (Dosovitskiy & Brox 2016);
- :func:`deepdream` / :func:`dream_zoom` / :func:`zoom_centre` — amplify a layer,
  ``I* = argmax_I Σ_i f_i(I)²``, with octaves, and the zoom-and-repeat loop;
- :func:`gram_matrix`, :func:`style_loss`, :func:`content_loss`, :func:`style_transfer` —
  texture synthesis and neural style transfer (Gatys, Ecker & Bethge 2015, 2016);
- :class:`RandomFeatureNet` — a fixed, seeded, multi-scale network of *random* convolutional
  filters: a working basis for texture synthesis and style transfer when no pretrained network is
  available (Ustyuzhaninov, Brendel, Gatys & Bethge, ICLR 2017; He, Wang & Hopcroft 2016);
- :func:`vgg_feature_net` — a torchvision VGG's feature layers by their paper names
  (``relu1_1``, ``relu4_2``, ...), with ImageNet input normalisation.

Images are float tensors ``[N, C, H, W]`` with pixels in [0, 1] unless stated otherwise.

>>> net = RandomFeatureNet(seed=0)
>>> fx = FeatureExtractor(net, ["scale0", "scale2"])
>>> {k: tuple(v.shape) for k, v in fx(torch.rand(1, 3, 64, 64)).items()}
{'scale0': (1, 128, 64, 64), 'scale2': (1, 128, 16, 16)}
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks
from .models import Normalize
from .viz import recording

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_at_least_one(**values) -> None:
    """Each value must be a real number ``>= 1`` (an exponent, a zoom or scale factor)."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a number >= 1, got {v!r} ({type(v).__name__})")
        if not v >= 1:
            raise ValueError(f"{name} must be a number >= 1, got {v!r}")


# ----------------------------------------------------------------------------------------------
# Features of named layers
# ----------------------------------------------------------------------------------------------


class FeatureExtractor:
    """The outputs of named layers of ``model``, as a dict.

    ``layers``: module names as listed by ``model.named_modules()`` (e.g. ``"1.4"`` or
    ``"features.20"``), or a mapping ``{alias: module name}`` (e.g. ``{"relu4_2": "features.20"}``);
    the returned dict is keyed by the alias. Hooks are attached only during a call, and the
    forward pass stops as soon as the last requested layer has run, so asking for a shallow layer
    of a deep network costs only the shallow part (the hooks are :func:`cvdl.viz.recording`'s).

    ``__call__(x)`` → ``{alias: Tensor[N, ...]}`` (the layer's output; gradients flow to ``x``).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | Mapping[str, str]):
        _checks.module(model)
        if isinstance(layers, str):
            raise ValueError(f"layers must be a list of layer names or a mapping, got the string {layers!r}")
        self.layers: dict[str, str] = dict(layers) if isinstance(layers, Mapping) else {n: n for n in layers}
        if not self.layers:
            raise ValueError("layers must name at least one layer")
        modules = dict(model.named_modules())
        for alias, name in self.layers.items():
            if name not in modules or name == "":
                known = [n for n in modules if n][:40]
                raise ValueError(f"model has no layer {name!r} (for {alias!r}); its layers are {known}")
        self.model = model
        self._modules = {alias: modules[name] for alias, name in self.layers.items()}

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _checks.images(x)
        with recording(self._modules, stop=True) as out:
            self.model(x)
        missing = [a for a in self.layers if not out[a]]
        if missing:
            raise ValueError(f"layers {missing} were not reached by the model's forward pass")
        return {alias: out[alias][-1] for alias in self.layers}  # in the order asked for

    def layer(self, alias: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x ↦ features of one layer`` — the ``Φ`` that :func:`invert` and :func:`deepdream` take."""
        if alias not in self.layers:
            raise ValueError(f"unknown layer {alias!r}; this extractor has {list(self.layers)}")
        sub = FeatureExtractor(self.model, {alias: self.layers[alias]})
        return lambda x: sub(x)[alias]


# ----------------------------------------------------------------------------------------------
# Image priors: total variation and the α-norm
# ----------------------------------------------------------------------------------------------


def total_variation(x: torch.Tensor, beta: float = 2.0, eps: float = 0.0) -> torch.Tensor:
    """``R_{V^β}(x) = Σ_{c,i,j} ((x_{c,i,j+1} − x_{cij})² + (x_{c,i+1,j} − x_{cij})² + eps)^{β/2}``.

    ``x``: ``[N, C, H, W]``; returns ``[N]``. The sum runs over the ``(H−1)×(W−1)`` pixels that
    have both a right and a lower neighbour, in every channel (Mahendran & Vedaldi 2015, eq. 5).
    ``β = 2`` penalises every difference quadratically (smooth images); ``β = 1`` is the classic
    total variation (sharp edges survive). For ``β < 2`` the gradient is infinite where both
    differences vanish: pass a small ``eps`` (e.g. 1e-8) when optimising flat images with it.
    """
    _checks.images(x)
    _checks.positive(beta=beta)
    _checks.non_negative(eps=eps)
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"total variation needs H, W >= 2, got {tuple(x.shape[-2:])}")
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]  # [N, C, H-1, W-1]  horizontal differences
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]  # [N, C, H-1, W-1]  vertical differences
    sq = dx * dx + dy * dy + eps
    return (sq if beta == 2 else sq.pow(beta / 2)).sum(dim=(1, 2, 3))


def alpha_norm(x: torch.Tensor, alpha: float = 6.0) -> torch.Tensor:
    """``R_α(x) = ‖x‖_α^α = Σ_{c,i,j} |x_{cij}|^α`` per image: ``[N, C, H, W]`` → ``[N]``.

    With a large ``α`` (Mahendran & Vedaldi use 6) it is nearly free inside ``[−1, 1]`` and grows
    steeply outside: a soft box constraint that keeps the (centred) pixel values in range.
    """
    _checks.images(x)
    _check_at_least_one(alpha=alpha)
    return x.abs().pow(alpha).sum(dim=(1, 2, 3))


# ----------------------------------------------------------------------------------------------
# Feature inversion by optimisation
# ----------------------------------------------------------------------------------------------


@dataclass
class OptimResult:
    """What an image optimisation produced: the image(s) ``[N, C, H, W]`` and per-step losses."""

    image: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)

    def first_last(self, key: str = "loss") -> tuple[float, float]:
        values = self.history[key]
        return values[0], values[-1]


def _adam_pixels(x0: torch.Tensor, lr: float, steps: int, lr_final: float | None):
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    sched = None
    if lr_final is not None:  # cosine decay from lr to lr_final: a calm end to the optimisation
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr_final)
    return x, opt, sched


def feature_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``‖Φ(x) − Φ₀‖² / ‖Φ₀‖²`` per image: ``[N, ...]`` and ``[N or 1, ...]`` → ``[N]``."""
    if features.shape[1:] != target.shape[1:]:
        raise ValueError(f"features {tuple(features.shape)} and target {tuple(target.shape)} differ in shape")
    dims = tuple(range(1, features.ndim))
    return (features - target).pow(2).sum(dims) / target.pow(2).sum(dims).clamp_min(1e-12)


def invert(phi: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, x0: torch.Tensor, *,
           steps: int = 200, lr: float = 0.05, lam_alpha: float = 0.0, alpha: float = 6.0,
           lam_tv: float = 0.0, beta: float = 2.0, centre: float | torch.Tensor = 0.5,
           bound: float = 0.5, tv_scale: float | None = None) -> OptimResult:
    """Reconstruct images from their features (Mahendran & Vedaldi 2015): minimise over ``x``

    ``‖Φ(x) − Φ₀‖²/‖Φ₀‖²  +  λ_α · R_α((x − centre)/b) / n  +  λ_V · R_{V^β}((x − centre)/V) / n``

    with ``n = C·H·W`` (per-pixel averages), ``b = bound`` the range the centred pixels should
    stay in, and ``V = tv_scale`` (default ``b/6.5``) a typical difference between neighbours —
    the paper's normalisation, which makes ``λ ≈ 1`` a sensible scale whatever the image size.

    ``phi``: ``x [N,C,H,W] ↦ Φ(x) [N, ...]``; ``target``: ``Φ₀`` ``[N, ...]``; ``x0``: the start
    ``[N, C, H, W]`` (e.g. noise). Adam on the pixels, its step size decayed from ``lr`` to
    ``lr/10``. Returns the images and, per step, the mean over the batch of ``"loss"`` (the
    total), ``"feature"`` (the normalised feature error), ``"alpha"`` and ``"tv"`` (the
    regularisers before their λ).
    """
    _checks.images(x0, "x0")
    _checks.positive_int(steps=steps)
    _checks.non_negative(lr=lr, lam_alpha=lam_alpha, lam_tv=lam_tv)
    _checks.positive(bound=bound)
    v = bound / 6.5 if tv_scale is None else tv_scale
    _checks.positive(tv_scale=v)
    target = target.detach()
    n = x0[0].numel()
    x, opt, sched = _adam_pixels(x0, lr, steps, lr / 10)
    hist: dict[str, list[float]] = {"loss": [], "feature": [], "alpha": [], "tv": []}
    for _ in range(steps):
        z = x - centre
        fl = feature_loss(phi(x), target)                       # [N]
        ra = alpha_norm(z / bound, alpha) / n                   # [N]
        rv = total_variation(z / v, beta) / n                   # [N]
        loss = (fl + lam_alpha * ra + lam_tv * rv).mean()
        x.grad, = torch.autograd.grad(loss, x)                  # pixels only, not the weights
        opt.step()
        sched.step()
        for k, val in (("loss", loss), ("feature", fl.mean()), ("alpha", ra.mean()), ("tv", rv.mean())):
            hist[k].append(float(val.detach()))
    return OptimResult(x.detach(), hist)


# ----------------------------------------------------------------------------------------------
# Inverting a network with a network
# ----------------------------------------------------------------------------------------------


class UpconvDecoder(nn.Sequential):
    """Features ``[N, in_features]`` → images ``[N, C, H, W]`` in [0, 1] (Dosovitskiy & Brox 2016).

    A fully connected layer to a ``[width, H/4, W/4]`` map, then two "up-convolutions"
    (transposed convolutions, kernel 4, stride 2) that each double the resolution, and a sigmoid.
    Trained with the mean squared pixel error to invert a fixed network's features.
    """

    def __init__(self, in_features: int, out_shape: tuple[int, int, int] = (1, 28, 28), width: int = 32):
        _checks.positive_int(in_features=in_features, width=width)
        if len(out_shape) != 3:
            raise ValueError(f"out_shape must be (C, H, W), got {out_shape!r}")
        c, h, w = out_shape
        _checks.positive_int(channels=c, height=h, width_px=w)
        if h % 4 or w % 4:
            raise ValueError(f"out_shape's H and W must be multiples of 4, got {(h, w)}")
        self.out_shape = tuple(out_shape)
        super().__init__(
            nn.Linear(in_features, width * (h // 4) * (w // 4)), nn.ReLU(),
            nn.Unflatten(1, (width, h // 4, w // 4)),                                    # [N, w, H/4, W/4]
            nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1), nn.ReLU(),  # [N, w/2, H/2, W/2]
            nn.ConvTranspose2d(width // 2, c, 4, stride=2, padding=1), nn.Sigmoid())    # [N, C, H, W]


# ----------------------------------------------------------------------------------------------
# DeepDream
# ----------------------------------------------------------------------------------------------


def _check_dream(image, step_size, jitter, counts: dict, factors: dict) -> None:
    """The arguments :func:`deepdream` and :func:`dream_zoom` share: ``image [N, C, H, W]``,
    ``step_size >= 0``, ``jitter >= 0`` pixels, the ``counts`` positive integers, the (zoom)
    ``factors`` numbers ``>= 1``."""
    _checks.images(image, "image")
    _checks.positive_int(**counts)
    _checks.non_negative(step_size=step_size)
    _checks.non_negative_int(jitter=jitter)
    _check_at_least_one(**factors)


def _dream_steps(phi, x: torch.Tensor, steps: int, step_size: float, jitter: int,
                 generator: torch.Generator, clamp: tuple[float, float] | None, hist: list[float]) -> torch.Tensor:
    for _ in range(steps):
        dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist() if jitter else (0, 0))
        xs = torch.roll(x, (dy, dx), dims=(-2, -1)).detach().requires_grad_(True)   # random shift
        objective = phi(xs).pow(2).mean()               # (1/N) Σ_i f_i(I)²
        g, = torch.autograd.grad(objective, xs)         # = (2/N) f · ∂f/∂I: "gradient = activation"
        g = torch.roll(g, (-dy, -dx), dims=(-2, -1))
        x = x + step_size * g / g.abs().mean().clamp_min(1e-12)   # normalised gradient ascent
        if clamp is not None:
            x = x.clamp(*clamp)
        hist.append(float(objective.detach()))
    return x.detach()


def deepdream(phi: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, *, steps: int = 10,
              step_size: float = 0.01, octaves: int = 3, octave_scale: float = 1.4, jitter: int = 2,
              clamp: tuple[float, float] | None = (0.0, 1.0), seed: int = 0) -> OptimResult:
    """Amplify whatever layer ``phi`` detects in ``image`` [1, C, H, W]: ``I* = argmax Σ_i f_i(I)²``.

    Gradient *ascent* on the pixels with steps normalised by the mean absolute gradient, a random
    shift (``jitter`` pixels) per step, and ``octaves``: the image is first dreamt at
    ``1/octave_scale^(octaves−1)`` of its size, the detail added is upsampled to the next octave,
    and so on up to full size (Mordvintsev, Olah & Tyka 2015). ``history["objective"]`` is
    ``mean_i f_i(I)²`` before each step (it restarts at each octave: ``history["octave"]`` says which).
    """
    _check_dream(image, step_size, jitter, dict(steps=steps, octaves=octaves), dict(octave_scale=octave_scale))
    gen = torch.Generator().manual_seed(seed)
    h, w = image.shape[-2:]
    sizes = [(max(1, round(h / octave_scale ** k)), max(1, round(w / octave_scale ** k))) for k in range(octaves)]
    sizes = sizes[::-1]                                              # small → full size
    bases = [F.interpolate(image, size=s, mode="bilinear", align_corners=False, antialias=True)
             if s != (h, w) else image for s in sizes]
    detail = torch.zeros_like(bases[0])
    hist: list[float] = []
    which: list[int] = []
    x = image
    for k, (size, base) in enumerate(zip(sizes, bases)):
        if detail.shape[-2:] != size:
            detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
        n0 = len(hist)
        x = _dream_steps(phi, base + detail, steps, step_size, jitter, gen, clamp, hist)
        which += [k] * (len(hist) - n0)
        detail = x - base                                            # what the dream added
    return OptimResult(x.detach(), {"objective": hist, "octave": which})


def zoom_centre(image: torch.Tensor, zoom: float) -> torch.Tensor:
    """Crop the centre ``1/zoom`` of ``image`` [N, C, H, W] and resize it back to ``H × W``."""
    _checks.images(image, "image")
    _check_at_least_one(zoom=zoom)
    h, w = image.shape[-2:]
    ch, cw = max(1, round(h / zoom)), max(1, round(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = image[..., top:top + ch, left:left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def dream_zoom(phi: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, *, frames: int = 8,
               zoom: float = 1.05, steps: int = 5, step_size: float = 0.01, jitter: int = 2,
               clamp: tuple[float, float] | None = (0.0, 1.0), seed: int = 0) -> tuple[list[torch.Tensor], list[float]]:
    """DeepDream's endless stream: dream, zoom into the centre, dream on the result, ...

    Returns ``frames`` images ``[1, C, H, W]`` (each dreamt, before zooming) and the objective
    ``mean_i f_i(I)²`` at the end of each frame.
    """
    _check_dream(image, step_size, jitter, dict(frames=frames, steps=steps), dict(zoom=zoom))
    gen = torch.Generator().manual_seed(seed)
    out, objectives = [], []
    x = image.detach()
    for _ in range(frames):
        hist: list[float] = []
        x = _dream_steps(phi, x, steps, step_size, jitter, gen, clamp, hist)
        with torch.no_grad():
            objectives.append(float(phi(x).pow(2).mean()))
        out.append(x)
        x = zoom_centre(x, zoom)
    return out, objectives


# ----------------------------------------------------------------------------------------------
# Gram matrices, texture synthesis and style transfer
# ----------------------------------------------------------------------------------------------


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """``G_ij = (1/(H·W)) Σ_k F_ik F_jk``: ``[N, C, H, W]`` → ``[N, C, C]``.

    The correlations between channels, averaged over positions: *where* a feature fires is
    summed away, *which features fire together* stays — a texture's statistics (Gatys et al.
    2015). Dividing by ``H·W`` makes it independent of the image size.
    """
    _checks.images(features, "features")
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)                  # [N, C, HW]
    return f @ f.transpose(1, 2) / (h * w)             # [N, C, C]


def _weights(layers: Sequence[str] | Mapping[str, float]) -> dict[str, float]:
    if isinstance(layers, str):
        raise ValueError(f"layers must be a list of names or {{name: weight}}, got the string {layers!r}")
    w = dict(layers) if isinstance(layers, Mapping) else {n: 1.0 for n in layers}
    for k, v in w.items():
        _checks.non_negative(**{f"weight of {k!r}": v})
    return w


def _weighted_sum(kind: str, features: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                  layers: Sequence[str] | Mapping[str, float],
                  per_layer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``Σ_l w_l · per_layer(features[l], targets[l])`` over the (weighted) ``layers`` → ``[N]``."""
    total = 0.0
    for name, wl in _weights(layers).items():
        if name not in features or name not in targets:
            raise ValueError(f"{kind} layer {name!r} missing: features have {list(features)}, "
                             f"targets have {list(targets)}")
        total = total + wl * per_layer(features[name], targets[name])
    return total


def style_loss(features: Mapping[str, torch.Tensor], target_grams: Mapping[str, torch.Tensor],
               weights: Sequence[str] | Mapping[str, float]) -> torch.Tensor:
    """``Σ_l w_l ‖G(F_l) − A_l‖²_F / ‖A_l‖²_F`` per image → ``[N]``.

    ``features[l]``: ``[N, C_l, H_l, W_l]``; ``target_grams[l]``: ``[1 or N, C_l, C_l]``.
    Normalising each layer by ``‖A_l‖²`` (where Gatys et al. divide by ``4 N_l² M_l²``) makes
    the layer weights comparable across layers and networks: 1 means "as far as no texture".
    """
    return _weighted_sum("style", features, target_grams, weights,
                         lambda f, a: feature_loss(gram_matrix(f), a))   # ‖G − A‖² / ‖A‖²


def content_loss(features: Mapping[str, torch.Tensor], target_features: Mapping[str, torch.Tensor],
                 layers: Sequence[str] | Mapping[str, float]) -> torch.Tensor:
    """``Σ_l w_l ‖F_l − P_l‖² / ‖P_l‖²`` per image → ``[N]`` (the inversion loss, per layer)."""
    return _weighted_sum("content", features, target_features, layers, feature_loss)


def style_transfer(extractor: FeatureExtractor, style: torch.Tensor, content: torch.Tensor | None = None, *,
                   style_layers: Sequence[str] | Mapping[str, float],
                   content_layers: Sequence[str] | Mapping[str, float] = (),
                   style_weight: float = 1.0, content_weight: float = 1.0, tv_weight: float = 0.0,
                   init: str | torch.Tensor = "content", steps: int = 200, optimizer: str = "lbfgs",
                   lr: float | None = None, noise: float = 0.1, seed: int = 0) -> OptimResult:
    """Neural style transfer (Gatys, Ecker & Bethge 2016); texture synthesis when ``content`` is None.

    Minimise over the image ``x`` ``[1, C, H, W]``:
    ``style_weight · style_loss(x, style) + content_weight · content_loss(x, content) +
    tv_weight · TV²(x)/n`` — the style through the Gram matrices of ``style_layers`` (a list or
    ``{name: weight}``), the content through the features of ``content_layers``.

    ``style``: ``[1, C, Hs, Ws]`` (any size: Gram matrices do not depend on it); ``content``:
    ``[1, C, H, W]`` or None. ``init``: ``"content"``; ``"noise"`` — the style's mean colour plus
    Gaussian noise of std ``noise`` (seeded), at the content's size (the style's without content);
    or a tensor. ``optimizer``: ``"lbfgs"`` (as Gatys et al.; ``steps`` = function evaluations,
    ``lr`` default 1) or ``"adam"`` (``steps`` updates, ``lr`` default 0.03, decayed to a tenth).
    The pixels are not constrained during the optimisation; the result is clipped to [0, 1].
    ``history``: ``"loss"``, ``"style"``, ``"content"``, ``"tv"`` per evaluation (before weighting).
    """
    _checks.images(style, "style")
    _checks.positive_int(steps=steps)
    _checks.non_negative(style_weight=style_weight, content_weight=content_weight, tv_weight=tv_weight,
                        noise=noise)
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    lr = (1.0 if optimizer == "lbfgs" else 0.03) if lr is None else lr
    _checks.non_negative(lr=lr)
    sw, cw = _weights(style_layers), _weights(content_layers)
    if not sw:
        raise ValueError("style_layers must name at least one layer")
    if content is not None:
        _checks.images(content, "content")
        if not cw:
            raise ValueError("content is given but content_layers is empty")
    elif isinstance(init, str) and init == "content":
        raise ValueError("init='content' needs a content image; use init='noise' for texture synthesis")
    for name in list(sw) + list(cw):
        if name not in extractor.layers:
            raise ValueError(f"layer {name!r} is not one of the extractor's layers {list(extractor.layers)}")
    with torch.no_grad():
        grams = {k: gram_matrix(v) for k, v in extractor(style).items() if k in sw}        # [1, C_l, C_l]
        targets = ({k: v for k, v in extractor(content).items() if k in cw} if content is not None else {})
    if isinstance(init, torch.Tensor):
        x0 = _checks.images(init, "init")
    elif init == "content":
        x0 = content
    elif init == "noise":
        shape = content.shape if content is not None else style.shape
        gen = torch.Generator().manual_seed(seed)
        x0 = style.mean(dim=(2, 3), keepdim=True) + noise * torch.randn(shape, generator=gen).to(style)
    else:
        raise ValueError(f"init must be 'content', 'noise' or a tensor, got {init!r}")
    n = x0[0].numel()
    hist: dict[str, list[float]] = {"loss": [], "style": [], "content": [], "tv": []}

    def objective(x):
        feats = extractor(x)
        ls = style_loss(feats, grams, sw).mean()
        lc = content_loss(feats, targets, cw).mean() if targets else x.new_zeros(())
        tv = (total_variation(x) / n).mean()
        loss = style_weight * ls + content_weight * lc + tv_weight * tv
        for k, val in (("loss", loss), ("style", ls), ("content", lc), ("tv", tv)):
            hist[k].append(float(val.detach()))
        return loss

    x = x0.detach().clone().requires_grad_(True)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([x], lr=lr, max_iter=steps, max_eval=steps, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)

        def closure():
            loss = objective(x)
            x.grad, = torch.autograd.grad(loss, x)          # pixels only, not the weights
            return loss

        opt.step(closure)
    else:
        x, opt, sched = _adam_pixels(x0, lr, steps, lr / 10)
        for _ in range(steps):
            x.grad, = torch.autograd.grad(objective(x), x)
            opt.step()
            sched.step()
    return OptimResult(x.detach().clamp(0, 1), hist)


# ----------------------------------------------------------------------------------------------
# Networks: random multi-scale features, and VGG by layer name
# ----------------------------------------------------------------------------------------------


class RandomFeatureNet(nn.Module):
    """A fixed network of random filters at several scales — no training, fully determined by ``seed``.

    The input ``[N, 3, H, W]`` (pixels in [0, 1]) is normalised per channel (ImageNet statistics),
    then for each scale ``k = 0 … scales−1`` the image is downsampled by ``2^k`` (antialiased
    bilinear, so no blocky gradients) and filtered by
    ``channels`` random ``kernel_size × kernel_size`` filters (Gaussian entries, each filter
    scaled to unit norm, reflect padding, no bias), followed by a ReLU. The module ``scale{k}``
    outputs ``[N, channels, H/2^k, W/2^k]``; its filters see ``kernel_size·2^k`` pixels of the
    original image. ``forward`` returns ``{"scale0": ..., ...}``.

    This is the "multi-scale single layer of random filters" that Ustyuzhaninov, Brendel, Gatys &
    Bethge (ICLR 2017) found already synthesises natural textures with Gram matrices; we get the
    large scales by downsampling the image instead of using ever larger filters (a 5×5 filter on
    the image downsampled by 8 covers 40×40 pixels), which is much cheaper on a CPU.
    """

    def __init__(self, scales: int = 4, channels: int = 128, kernel_size: int = 5, seed: int = 0):
        super().__init__()
        _checks.positive_int(scales=scales, channels=channels, kernel_size=kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (to keep the size), got {kernel_size}")
        self.scales, self.channels, self.kernel_size, self.seed = scales, channels, kernel_size, seed
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        gen = torch.Generator().manual_seed(seed)
        for k in range(scales):
            conv = nn.Conv2d(3, channels, kernel_size, padding=kernel_size // 2, padding_mode="reflect", bias=False)
            w = torch.randn(channels, 3, kernel_size, kernel_size, generator=gen)     # [O, 3, k, k]
            w = w / w.flatten(1).norm(dim=1)[:, None, None, None]                     # unit-norm filters
            conv.weight.data.copy_(w)
            conv.weight.requires_grad_(False)
            self.add_module(f"scale{k}", nn.Sequential(conv, nn.ReLU()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _checks.images(x)
        if x.shape[1] != 3:
            raise ValueError(f"RandomFeatureNet takes RGB images [N, 3, H, W], got {tuple(x.shape)}")
        z = self.normalize(x)
        out = {}
        for k in range(self.scales):
            zk = (F.interpolate(z, scale_factor=0.5 ** k, mode="bilinear", antialias=True, align_corners=False)
                  if k else z)                                                          # [N, 3, H/2^k, W/2^k]
            out[f"scale{k}"] = getattr(self, f"scale{k}")(zk)                          # [N, ch, H/2^k, W/2^k]
        return out

    def extra_repr(self) -> str:
        return f"scales={self.scales}, channels={self.channels}, kernel_size={self.kernel_size}, seed={self.seed}"


def vgg_feature_net(vgg: nn.Module) -> tuple[nn.Sequential, dict[str, str]]:
    """A torchvision VGG's convolutional part with ImageNet normalisation, and its layers by name.

    Returns ``(net, names)``: ``net`` takes pixels in [0, 1] ``[N, 3, H, W]``; ``names`` maps the
    paper's names (``"conv1_1"``, ``"relu1_1"``, …, ``"pool5"``) to module names of ``net``
    (``"features.0"``, …), ready for :class:`FeatureExtractor`. Max-pooling is kept. The ReLUs
    of ``vgg.features`` are switched to out-of-place (so a hooked conv output is not overwritten);
    the weights are shared with ``vgg``, not copied.
    """
    feats = getattr(vgg, "features", None)
    if not isinstance(feats, nn.Sequential):
        raise ValueError(f"expected a torchvision VGG (with a .features Sequential), got {type(vgg).__name__}")
    net = nn.Sequential(OrderedDict(normalize=Normalize(IMAGENET_MEAN, IMAGENET_STD), features=feats)).eval()
    names, block, conv = {}, 1, 0
    for i, m in enumerate(feats):
        if isinstance(m, nn.Conv2d):
            conv += 1
            names[f"conv{block}_{conv}"] = f"features.{i}"
        elif isinstance(m, nn.ReLU):
            names[f"relu{block}_{conv}"] = f"features.{i}"
        elif isinstance(m, nn.MaxPool2d):
            names[f"pool{block}"] = f"features.{i}"
            block, conv = block + 1, 0
    for m in feats:                                     # the ReLUs must not overwrite the conv outputs
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return net, names
