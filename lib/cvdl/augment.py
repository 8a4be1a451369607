"""Data augmentation on whole batches, on the device (no per-image Python, no PIL).

Two geometric families, each a plain function with explicit per-image parameters (checked
against ``torchvision.transforms.v2.functional`` in ``tests/test_augment.py``) and a random
callable for ``fit(..., augment=...)``:

- :func:`pad_crop` / :class:`RandomCrop` — zero-pad by ``p`` pixels, crop back to ``H×W`` at a
  per-image offset: an exact integer translation by up to ``±p`` pixels (the CIFAR-10 classic);
- :func:`affine` / :class:`RandomAffine` — rotation, scaling and translation about the image
  centre, by one ``F.affine_grid`` + ``F.grid_sample`` call for the whole batch.

>>> aug = RandomAffine(degrees=10, translate=0.1, scale=(0.9, 1.1), seed=0)
>>> hist = fit(model, train, test, augment=aug)       # applied to each training batch
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks


def _per_image(value, batch: int, name: str, dtype=torch.float32, device=None) -> torch.Tensor:
    """A number or a ``[N]`` tensor/sequence → a ``[N]`` tensor."""
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name} must be a number or have one value per image ([{batch}]), got shape {tuple(t.shape)}")
    return t


# ----------------------------------------------------------------------------------------------
# Pad and crop: exact integer translations
# ----------------------------------------------------------------------------------------------


def pad_crop(x: torch.Tensor, padding: int, top, left) -> torch.Tensor:
    """Zero-pad ``x`` by ``padding`` on every side, then crop ``H×W`` at ``(top, left)`` per image.

    ``x``: ``[N, C, H, W]``; ``top``, ``left``: ints or int ``[N]`` in ``0..2·padding``.
    Returns ``[N, C, H, W]``; ``top = left = padding`` gives ``x`` back, and image ``b`` is
    shifted down by ``padding - top[b]`` and right by ``padding - left[b]`` pixels.
    Equals ``torchvision.transforms.v2.functional.crop(pad(x, padding), top, left, H, W)``.
    """
    _checks.images(x)
    _checks.non_negative_int(padding=padding)
    b, c, h, w = x.shape
    top = _per_image(top, b, "top", torch.long, x.device)
    left = _per_image(left, b, "left", torch.long, x.device)
    for name, t in (("top", top), ("left", left)):
        if b and (t.min() < 0 or t.max() > 2 * padding):
            raise ValueError(f"{name} offsets must lie in 0..{2 * padding} for padding {padding}, "
                             f"got values in {t.min().item()}..{t.max().item()}")
    padded = F.pad(x, (padding, padding, padding, padding))                 # [N, C, H+2p, W+2p]
    rows = top[:, None] + torch.arange(h, device=x.device)                 # [N, H]
    cols = left[:, None] + torch.arange(w, device=x.device)                # [N, W]
    batch = torch.arange(b, device=x.device)[:, None, None]                # [N, 1, 1]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]              # [N, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()                             # [N, C, H, W]


def translate(x: torch.Tensor, dy, dx) -> torch.Tensor:
    """Shift each image down by ``dy`` and right by ``dx`` whole pixels (ints or int ``[N]``),
    filling with zeros: ``[N, C, H, W]`` → ``[N, C, H, W]``."""
    _checks.images(x)
    b = x.shape[0]
    dy = _per_image(dy, b, "dy", torch.long, x.device)
    dx = _per_image(dx, b, "dx", torch.long, x.device)
    p = int(max(dy.abs().max().item(), dx.abs().max().item())) if b else 0
    return pad_crop(x, p, p - dy, p - dx)


class RandomCrop:
    """Random pad-and-crop: each image moves by a random whole-pixel offset in ``-p..p``.

    Same distribution as ``torchvision.transforms.RandomCrop(size, padding=p)`` with zero fill,
    drawn for the whole batch at once from the callable's own generator (``seed``).
    """

    def __init__(self, padding: int = 2, seed: int = 0):
        _checks.non_negative_int(padding=padding)
        self.padding, self.seed = padding, seed
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _checks.images(x)
        b = x.shape[0]
        top = torch.randint(0, 2 * self.padding + 1, (b,), generator=self.generator)
        left = torch.randint(0, 2 * self.padding + 1, (b,), generator=self.generator)
        return pad_crop(x, self.padding, top.to(x.device), left.to(x.device))

    def __repr__(self) -> str:  # also the augmentation's name in checkpoint keys
        return f"RandomCrop(padding={self.padding}, seed={self.seed})"


# ----------------------------------------------------------------------------------------------
# Affine warps: rotation, scale, translation
# ----------------------------------------------------------------------------------------------


def affine_theta(angle, translate, scale, size: tuple[int, int]) -> torch.Tensor:
    """The ``[N, 2, 3]`` matrices ``F.affine_grid`` needs for rotation + scale + translation.

    ``angle``: degrees, ``[N]`` or a number (positive = clockwise on screen, torchvision's
    convention); ``translate``: pixels ``(tx, ty)`` (right, down), a pair or ``[N, 2]``;
    ``scale``: a number or ``[N]``; ``size``: ``(H, W)``.

    The forward map about the image centre is ``p' = s·R(θ)·p + t`` in pixels. ``affine_grid``
    wants the *inverse* (output pixel → where to read in the input), ``p = R(θ)ᵀ(p' - t)/s``,
    in normalised coordinates ``u = p / (W/2)``, ``v = q / (H/2)`` (``align_corners=False``).
    """
    if not isinstance(size, (tuple, list)) or len(size) != 2 or min(size) <= 0:
        raise ValueError(f"size must be (H, W) with positive entries, got {size!r}")
    h, w = size
    angle = torch.as_tensor(angle, dtype=torch.float32)
    trans = torch.as_tensor(translate, dtype=torch.float32)
    scale = torch.as_tensor(scale, dtype=torch.float32)
    b = max(angle.numel() if angle.ndim else 1, trans.shape[0] if trans.ndim == 2 else 1,
            scale.numel() if scale.ndim else 1)
    angle = _per_image(angle, b, "angle")
    scale = _per_image(scale, b, "scale")
    if trans.shape == (2,):
        trans = trans.expand(b, 2)
    if trans.shape != (b, 2):
        raise ValueError(f"translate must be (tx, ty) or [N, 2] = [{b}, 2], got shape {tuple(trans.shape)}")
    if (scale <= 0).any():
        raise ValueError(f"scale must be positive, got {scale.tolist()}")
    rad = torch.deg2rad(angle)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # inverse linear part R(θ)ᵀ / s in pixels, rows (x, y) with y pointing down: [N, 2, 2]
    inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2) / scale[:, None, None]
    shift = -(inv @ trans[:, :, None])[..., 0]                              # [N, 2] pixels
    half = torch.tensor([w / 2.0, h / 2.0])                                 # pixels per normalised unit
    lin = inv * half[None, None, :] / half[None, :, None]                   # D⁻¹ · inv · D
    return torch.cat([lin, (shift / half)[:, :, None]], dim=2)              # [N, 2, 3]


def affine(x: torch.Tensor, angle=0.0, translate=(0.0, 0.0), scale=1.0,
           mode: str = "bilinear") -> torch.Tensor:
    """Rotate by ``angle`` degrees (clockwise), scale by ``scale``, then shift by ``translate``
    pixels ``(right, down)``, about the image centre, zero outside: ``[N, C, H, W]`` → same.

    Parameters are numbers or one per image (``[N]``, translate ``[N, 2]``). Matches
    ``torchvision.transforms.v2.functional.affine(x, angle, translate, scale, shear=0)``.
    """
    _checks.images(x)
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    b, c, h, w = x.shape
    theta = affine_theta(angle, translate, scale, (h, w))
    if theta.shape[0] == 1 and b != 1:
        theta = theta.expand(b, 2, 3)
    if theta.shape[0] != b:
        raise ValueError(f"got parameters for {theta.shape[0]} images but a batch of {b}")
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)          # [N, H, W, 2]
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


class RandomAffine:
    """Random rotation in ``±degrees``, translation up to ``translate·(W, H)`` pixels and scale in
    ``scale``, drawn independently per image (like ``torchvision.transforms.RandomAffine``), applied
    to the whole batch with one :func:`affine` call. ``seed`` fixes the callable's own generator.
    """

    def __init__(self, degrees: float = 10.0, translate: float = 0.1,
                 scale: tuple[float, float] = (0.9, 1.1), seed: int = 0):
        _checks.non_negative(degrees=degrees)
        if not isinstance(translate, (int, float)) or not 0 <= translate <= 1:
            raise ValueError(f"translate must be a fraction in [0, 1], got {translate!r}")
        if (not isinstance(scale, (tuple, list)) or len(scale) != 2 or not 0 < scale[0] <= scale[1]):
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
        self.degrees, self.translate, self.scale, self.seed = float(degrees), float(translate), tuple(scale), seed
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, b: int, size: tuple[int, int]) -> dict:
        """Draw ``angle [N]``, ``translate [N, 2]`` (pixels) and ``scale [N]``."""
        h, w = size
        g = self.generator
        u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731 uniform [0, 1)
        angle = (2 * u(b) - 1) * self.degrees
        trans = (2 * u(b, 2) - 1) * self.translate * torch.tensor([float(w), float(h)])
        lo, hi = self.scale
        scale = lo + (hi - lo) * u(b)
        return {"angle": angle, "translate": trans, "scale": scale}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _checks.images(x)
        if x.shape[0] == 0:
            return x
        p = self.sample(x.shape[0], tuple(x.shape[-2:]))
        return affine(x, p["angle"], p["translate"], p["scale"])

    def __repr__(self) -> str:  # also the augmentation's name in checkpoint keys
        return (f"RandomAffine(degrees={self.degrees:g}, translate={self.translate:g}, "
                f"scale=({self.scale[0]:g}, {self.scale[1]:g}), seed={self.seed})")

