"""Adversarial and fooling images (notebook 06).

- :func:`project_box` — the perturbation ``r`` clipped so that ``x + r`` stays in the box ``[0, 1]^m``;
- :func:`average_distortion` — Szegedy et al.'s "av. distortion" ``sqrt(Σ r² / n)`` per image;
- :func:`fgsm` — the fast gradient sign method, ``x + ε·sign(∇ₓ J(θ, x, y))`` (Goodfellow et al. 2015);
- :func:`box_constrained_attack` — Szegedy et al. (2014): ``min c‖r‖ + loss_f(x + r, l)`` subject to
  ``x + r ∈ [0, 1]^m``, by projected Adam, with a per-image bisection over ``c``;
- :func:`gaussian_noise_at_distortion` — random noise with the same average distortion, the control;
- :func:`map_elites` — fooling images by evolution with an archive of one elite per class
  (MAP-Elites, as used by Nguyen et al. 2015), directly encoded images;
- :func:`gradient_fooling` — fooling images by gradient ascent on a class's log-probability.

Images are float tensors ``[N, C, H, W]`` with values in ``[0, 1]``; models take such images and
return class scores (logits) ``[N, K]`` — e.g. :func:`cvdl.zoo.course_classifier`'s networks,
whose first layer normalises. An attack leaves the model as it found it: gradients are taken in
eval mode (BatchNorm's running statistics are used, not updated; Dropout is off), the model's
mode is restored afterwards, and its parameters' ``.grad`` are not touched.

>>> x_adv = fgsm(model, x, y, eps=0.25)
>>> res = box_constrained_attack(model, x, target)
>>> average_distortion(x, res.x_adv).mean()
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks
from .viz import eval_mode

# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------


def _check_images(x, name: str = "x") -> torch.Tensor:
    """A batch ``[N, ...]`` of floating-point images with values in ``[0, 1]``."""
    return _checks.images(x, name, ndim=None, unit_range=True)


def _check_labels(y: torch.Tensor, n: int, name: str = "y") -> None:
    if not isinstance(y, torch.Tensor) or y.shape != (n,):
        raise ValueError(f"{name} must be a tensor [N] = [{n}] of class indices, got "
                         f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")


def _check_classes(y: torch.Tensor, num_classes: int, name: str) -> None:
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must lie in 0..{num_classes - 1} (the model has {num_classes} classes), "
                         f"got values in {y.min().item()}..{y.max().item()}")


# ----------------------------------------------------------------------------------------------
# The box and the distortion
# ----------------------------------------------------------------------------------------------


def project_box(x: torch.Tensor, r: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """The perturbation ``r`` projected so that ``x + r`` lies in the box ``[low, high]^m``.

    ``x``, ``r``: ``[N, ...]`` of the same shape. The Euclidean projection onto a box is
    coordinate-wise: ``r_i ← clamp(r_i, low − x_i, high − x_i)``, i.e.
    ``x + project_box(x, r) == clamp(x + r, low, high)``.

    In floating point the result is ``clamp(x + r, low, high) − x``, corrected where rounding
    would leave ``x + result`` outside the box: ``x + project_box(x, r)`` always lies in
    ``[low, high]`` exactly, and equals ``clamp(x + r, low, high)`` up to the rounding of
    ``x + result`` (a step of ``result``'s last bit); where ``x + r`` is already inside, ``r``
    is returned unchanged.
    """
    _checks.tensor(x, "x")
    _checks.tensor(r, "r")
    if x.shape != r.shape:
        raise ValueError(f"x and r must have the same shape, got {tuple(x.shape)} and {tuple(r.shape)}")
    if not low < high:
        raise ValueError(f"the box needs low < high, got low={low}, high={high}")
    y = x + r
    inside = (y >= low) & (y <= high)
    p = torch.where(inside, r, y.clamp(low, high) - x)
    # x + p can round one step past the bound it was clamped to: step p back inwards until it is in
    for _ in range(4):
        above, below = x + p > high, x + p < low
        if not (above.any() or below.any()):
            break
        p = torch.where(above, torch.nextafter(p, torch.full_like(p, -math.inf)), p)
        p = torch.where(below, torch.nextafter(p, torch.full_like(p, math.inf)), p)
    return p


def average_distortion(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Per-image distortion ``sqrt(Σ_i (x'_i − x_i)² / n)`` (Szegedy et al. 2014), ``[N]``.

    ``x``, ``x_adv``: ``[N, ...]`` with ``n`` values per image (784 for MNIST). The table's "av.
    distortion" is the mean of this over the images.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(x_adv, torch.Tensor) or x.shape != x_adv.shape:
        raise ValueError("x and x_adv must be tensors of the same shape, got "
                         f"{getattr(x, 'shape', type(x).__name__)} and {getattr(x_adv, 'shape', type(x_adv).__name__)}")
    if x.ndim < 2:
        raise ValueError(f"x must be a batch [N, ...] of images, got shape {tuple(x.shape)}")
    r = (x_adv - x).flatten(1)  # [N, n]
    return r.pow(2).mean(1).sqrt()


# ----------------------------------------------------------------------------------------------
# FGSM
# ----------------------------------------------------------------------------------------------


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   loss_fn: Callable = F.cross_entropy) -> torch.Tensor:
    """``∇ₓ J(θ, x, y)`` of the loss summed over the batch (so each image gets its own gradient), ``[N, ...]``.

    Taken in eval mode (the model's mode is restored afterwards), with respect to ``x`` only.
    """
    x = x.detach().clone().requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        loss = loss_fn(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
         loss_fn: Callable = F.cross_entropy, clip: bool = True) -> torch.Tensor:
    """The fast gradient sign method: ``x̃ = x + ε·sign(∇ₓ J(θ, x, y))`` (Goodfellow et al. 2015).

    ``x``: images ``[N, C, H, W]`` in ``[0, 1]`` on the model's device; ``y``: true labels ``[N]``;
    ``eps``: the max-norm size of the step (``‖x̃ − x‖_∞ ≤ ε``); ``loss_fn(scores, y, reduction=)``:
    the training loss ``J``. With ``clip`` the result is clamped back into ``[0, 1]``.
    The gradient is taken in eval mode (:func:`input_gradient`): a model left in training mode
    is neither changed (BatchNorm statistics) nor attacked through batch statistics.
    Returns ``x̃`` ``[N, C, H, W]`` (detached).
    """
    _check_images(x)
    _check_labels(y, len(x))
    _checks.non_negative(eps=eps)
    grad = input_gradient(model, x, y, loss_fn)
    x_adv = x + eps * grad.sign()
    return (x_adv.clamp(0.0, 1.0) if clip else x_adv).detach()


# ----------------------------------------------------------------------------------------------
# Szegedy et al.'s box-constrained attack
# ----------------------------------------------------------------------------------------------


@dataclass
class BoxAttackResult:
    """What :func:`box_constrained_attack` found.

    ``x_adv``: ``[N, C, H, W]``, the smallest-‖r‖ image classified as the target over all rounds
    (``x`` itself where none was found); ``success``: bool ``[N]``; ``c``: ``[N]``, the value of
    ``c`` whose round gave ``x_adv`` (NaN where none succeeded); ``history``: one list per round of
    the batch's mean objective after each step; ``c_history``: ``[rounds, N]``, the ``c`` of each round.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    c: torch.Tensor
    history: list[list[float]] = field(default_factory=list)
    c_history: torch.Tensor | None = None


def box_objective(model: nn.Module, x: torch.Tensor, r: torch.Tensor, target: torch.Tensor,
                  c: torch.Tensor | float) -> torch.Tensor:
    """Szegedy et al.'s objective per image: ``c·‖r‖₂ + CE(f(x + r), l)``, ``[N]``.

    ``x``, ``r``: ``[N, C, H, W]``; ``target`` ``l``: ``[N]``; ``c``: a number or ``[N]``.
    (``‖r‖₂`` is computed as ``sqrt(Σ r² + 1e-12)`` so that its gradient at ``r = 0`` is 0.)
    """
    norm = (r.flatten(1).pow(2).sum(1) + 1e-12).sqrt()  # [N]
    return c * norm + F.cross_entropy(model(x + r), target, reduction="none")


def minimise_box_objective(model: nn.Module, x: torch.Tensor, target: torch.Tensor, c: torch.Tensor | float, *,
                           steps: int = 100, lr: float = 0.01,
                           watch: Callable[[torch.Tensor, torch.Tensor], None] | None = None
                           ) -> tuple[torch.Tensor, list[float]]:
    """``min_r c·‖r‖₂ + CE(f(x + r), l)`` subject to ``x + r ∈ [0, 1]^m``, by projected Adam.

    ``steps`` Adam steps from ``r = 0``, each followed by the projection :func:`project_box`
    (projected gradient descent with Adam's per-coordinate step sizes), with the learning rate
    annealed from ``lr`` to 0 on a cosine schedule so that the iterates settle at the minimum. The images are
    independent, so the batch's summed objective is minimised and each image gets its own
    gradient. ``x``: ``[N, C, H, W]``; ``target``: ``[N]``; ``c``: a number or ``[N]``.
    ``watch(scores [N, K], r [N, C, H, W])`` sees every iterate, the last one included.
    The model runs in eval mode (restored afterwards); only ``r`` is differentiated.
    Returns the final ``r`` ``[N, C, H, W]`` and the batch's mean objective after each step.
    """
    _check_images(x)
    _check_labels(target, len(x), "target")
    _checks.positive_int(steps=steps)
    _checks.positive(lr=lr)
    c_t = torch.as_tensor(c, dtype=x.dtype, device=x.device)
    if c_t.ndim > 1 or (c_t.ndim == 1 and c_t.shape != (len(x),)) or not torch.isfinite(c_t).all() or (c_t <= 0).any():
        raise ValueError(f"c must be a positive number or a tensor [N] = [{len(x)}] of positive numbers, got {c!r}")
    x = x.detach()
    r = torch.zeros_like(x, requires_grad=True)
    opt = torch.optim.Adam([r], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)  # lr → 0: the iterates settle
    curve = []
    with eval_mode(model), torch.enable_grad():
        for step in range(steps + 1):
            scores = model(x + r)                                              # [N, K]
            norm = (r.flatten(1).pow(2).sum(1) + 1e-12).sqrt()                 # [N]
            if watch is not None:
                with torch.no_grad():
                    watch(scores.detach(), r.detach())
            if step == steps:
                break
            obj = c_t * norm + F.cross_entropy(scores, target, reduction="none")  # [N]
            (r.grad,) = torch.autograd.grad(obj.sum(), r)                     # r only, not the weights
            opt.step()
            sched.step()
            with torch.no_grad():
                r.copy_(project_box(x, r))
            curve.append(obj.mean().item())
    return r.detach(), curve


def box_constrained_attack(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, c_init: float = 1.0,
                           rounds: int = 6, steps: int = 100, lr: float = 0.01) -> BoxAttackResult:
    """Szegedy et al. (2014): the closest image to ``x`` in ``[0, 1]^m`` that ``model`` labels ``target``.

    For each image, minimise ``c·‖r‖₂ + CE(f(x + r), l)`` subject to ``x + r ∈ [0, 1]^m``
    (:func:`minimise_box_objective`: projected Adam — the paper used box-constrained L-BFGS). A
    large ``c`` buys a small ``r`` that may not reach class ``l``; a small ``c`` reaches it with a
    larger ``r``. So ``c`` is searched per image over ``rounds``: ×10 after a success while no
    failure is known, ÷10 after a failure while no success is known, then bisection (geometric
    mean) between the largest successful and the smallest failing ``c``. Of all iterates of all
    rounds, the ``x + r`` classified as ``l`` with the smallest ``‖r‖₂`` is returned.

    ``x``: ``[N, C, H, W]`` in ``[0, 1]`` on the model's device; ``target``: ``[N]`` class indices.
    The model runs in eval mode (restored afterwards).
    """
    _check_images(x)
    _check_labels(target, len(x), "target")
    _checks.positive_int(rounds=rounds, steps=steps)
    _checks.positive(c_init=c_init, lr=lr)
    x = x.detach()
    n = len(x)
    with eval_mode(model), torch.no_grad():
        _check_classes(target, model(x[:1]).shape[1], "target")
    c = torch.full((n,), float(c_init), device=x.device)
    lo = torch.zeros(n, device=x.device)                 # largest c known to succeed (0: none)
    hi = torch.full((n,), math.inf, device=x.device)     # smallest c known to fail (inf: none)
    best_norm = torch.full((n,), math.inf, device=x.device)
    best_x, best_c = x.clone(), torch.full((n,), math.nan, device=x.device)
    history, c_history = [], []
    for _ in range(rounds):
        c_history.append(c.clone())
        hit = torch.zeros(n, dtype=torch.bool, device=x.device)

        def watch(scores, r):  # keep the closest x + r classified as the target so far
            nonlocal best_norm, hit
            on_target = scores.argmax(1) == target                      # [N]
            norm = r.flatten(1).norm(dim=1)                              # [N]
            ok = on_target & (norm < best_norm)
            best_norm = torch.where(ok, norm, best_norm)
            best_x[ok] = (x + r)[ok]
            best_c[ok] = c[ok]
            hit = hit | on_target

        _, curve = minimise_box_objective(model, x, target, c, steps=steps, lr=lr, watch=watch)
        history.append(curve)
        # the schedule over c: success → try a larger c (smaller r); failure → a smaller c
        lo = torch.where(hit, torch.maximum(lo, c), lo)
        hi = torch.where(hit, hi, torch.minimum(hi, c))
        both = (lo > 0) & torch.isfinite(hi)
        c = torch.where(both, (lo * hi).sqrt(), torch.where(hit, c * 10, c / 10))
    return BoxAttackResult(best_x.detach(), torch.isfinite(best_norm), best_c, history, torch.stack(c_history))


# ----------------------------------------------------------------------------------------------
# The control: Gaussian noise with the same average distortion
# ----------------------------------------------------------------------------------------------


def gaussian_noise_at_distortion(x: torch.Tensor, distortion: float, generator: torch.Generator | None = None,
                                 tol: float = 1e-4) -> tuple[torch.Tensor, float]:
    """``(clamp(x + σ·z, 0, 1), σ)`` with ``z ~ N(0, I)`` and ``σ`` chosen so that the mean of
    :func:`average_distortion` over the batch equals ``distortion``.

    Clamping to ``[0, 1]`` removes part of the noise (on MNIST's black background, about half of
    it), so ``σ`` is larger than the distortion; it is found by bisection (the distortion grows
    with ``σ``) to a relative tolerance ``tol``. ``x``: ``[N, C, H, W]`` in ``[0, 1]``.
    """
    _check_images(x)
    _checks.non_negative(distortion=distortion)
    if len(x) == 0:
        raise ValueError("x is empty: no images to add noise to")
    z = torch.randn(x.shape, generator=generator).to(x.device)

    def dist(sigma: float) -> float:
        return average_distortion(x, (x + sigma * z).clamp(0, 1)).mean().item()

    if distortion == 0:
        return x.clone(), 0.0
    lo, hi = 0.0, max(distortion, 1e-3)
    while dist(hi) < distortion:
        hi *= 2
        if hi > 1e4:
            raise ValueError(f"distortion {distortion} cannot be reached by clamped noise on these images")
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if dist(mid) < distortion else (lo, mid)
    sigma = 0.5 * (lo + hi)
    return (x + sigma * z).clamp(0, 1), sigma


# ----------------------------------------------------------------------------------------------
# Fooling images (Nguyen et al. 2015)
# ----------------------------------------------------------------------------------------------


@dataclass
class FoolingResult:
    """Fooling images, one per class.

    ``images``: ``[K, C, H, W]`` in ``[0, 1]`` (row ``k`` is the image for class ``k``);
    ``confidence``: ``[K]``, the model's softmax probability of class ``k`` for image ``k``;
    ``history``: ``[T, K]``, that confidence after each generation / step (the curve to plot).
    (With :func:`gradient_fooling`'s ``classes``, ``K`` is ``len(classes)`` and row ``j`` belongs
    to class ``classes[j]``.)
    """

    images: torch.Tensor
    confidence: torch.Tensor
    history: torch.Tensor


@torch.no_grad()
def map_elites(model: nn.Module, image_shape: tuple[int, ...], num_classes: int, generations: int, *,
               batch_size: int = 64, mutation_rate: float = 0.1, mutation_strength: float = 0.3,
               halve_rate_every: int | None = None, generator: torch.Generator | None = None,
               callback: Callable[[int, torch.Tensor], None] | None = None) -> FoolingResult:
    """Fooling images by evolution: MAP-Elites with one archive cell per class (Nguyen et al. 2015).

    Directly encoded images (one gene per pixel), started from uniform noise. The archive keeps,
    for every class ``k``, the elite image with the highest ``log p(k | image)`` seen so far.
    Each generation draws ``batch_size`` parents at random from the archive, mutates each pixel
    with probability ``mutation_rate`` by a Gaussian step of standard deviation
    ``mutation_strength`` (clamped to ``[0, 1]``), shows the children to the model, and makes a
    child the new elite of *every* class for which it beats the current elite. An elite's fitness
    therefore never decreases. ``halve_rate_every``: halve the mutation rate every that many
    generations (Nguyen et al. halve it every 1000). ``callback(generation, log_probs [K])``.
    The model runs in eval mode (restored afterwards), without gradients.

    ``image_shape``: ``(C, H, W)``. Returns a :class:`FoolingResult` (``history``: ``[generations + 1, K]``).
    """
    if not isinstance(image_shape, (tuple, list)) or not image_shape:
        raise ValueError(f"image_shape must be a shape like (1, 28, 28), got {image_shape!r}")
    _checks.positive_int(num_classes=num_classes, batch_size=batch_size,
                         **{f"image_shape[{i}]": s for i, s in enumerate(image_shape)})
    _checks.non_negative_int(generations=generations)
    if not (isinstance(mutation_rate, (int, float)) and 0 < mutation_rate <= 1):
        raise ValueError(f"mutation_rate must be in (0, 1], got {mutation_rate!r}")
    _checks.positive(mutation_strength=mutation_strength)
    if halve_rate_every is not None:
        _checks.positive_int(halve_rate_every=halve_rate_every)
    device, dtype = _checks.model_device(model), _checks.model_dtype(model)

    def rand(*shape):
        return torch.rand(shape, generator=generator).to(device=device, dtype=dtype)

    def randn(*shape):
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)

    with eval_mode(model):
        first = rand(batch_size, *image_shape)                           # [N, C, H, W] uniform noise
        logp = F.log_softmax(model(first), dim=1)                        # [N, K]
        if logp.shape[1] != num_classes:
            raise ValueError(f"num_classes is {num_classes} but the model gives {logp.shape[1]} scores")
        fitness, idx = logp.max(0)                                       # [K]: the best of the first batch per class
        elites = first[idx].clone()                                      # [K, C, H, W]
        history = [fitness.exp().cpu()]
        rate = float(mutation_rate)
        for gen in range(1, generations + 1):
            if halve_rate_every and gen % halve_rate_every == 0:
                rate /= 2
            parents = elites[torch.randint(num_classes, (batch_size,), generator=generator).to(device)]
            mask = rand(*parents.shape) < rate
            children = (parents + mask * mutation_strength * randn(*parents.shape)).clamp(0, 1)
            logp = F.log_softmax(model(children), dim=1)                 # [N, K]
            best, who = logp.max(0)                                      # the best child for each class
            better = best > fitness                                      # [K]
            elites[better] = children[who[better]]
            fitness = torch.where(better, best, fitness)
            history.append(fitness.exp().cpu())
            if callback is not None:
                callback(gen, fitness)
    return FoolingResult(elites, fitness.exp().cpu(), torch.stack(history))


def gradient_fooling(model: nn.Module, image_shape: tuple[int, ...], num_classes: int, steps: int, *,
                     lr: float = 0.05, init: str = "zeros", generator: torch.Generator | None = None,
                     classes: Sequence[int] | torch.Tensor | None = None) -> FoolingResult:
    """Fooling images by gradient ascent: for every class ``k``, ``max_x log p(k | x)`` subject to
    ``x ∈ [0, 1]^m``, by projected Adam from a blank (``init="zeros"``, ``"grey"``) or a
    uniform-noise (``"noise"``) image. The model runs in eval mode (restored afterwards); only
    the images are differentiated.

    ``image_shape``: ``(C, H, W)``; ``num_classes``: the number of scores ``K`` the model gives.
    ``classes``: the target classes, one image each (e.g. a few of ImageNet's 1 000); default all
    ``K``, in order. Returns a :class:`FoolingResult` whose row ``j`` is the image for
    ``classes[j]`` (``history``: ``[steps + 1, len(classes)]``).
    """
    if not isinstance(image_shape, (tuple, list)) or not image_shape:
        raise ValueError(f"image_shape must be a shape like (1, 28, 28), got {image_shape!r}")
    _checks.positive_int(num_classes=num_classes, steps=steps, **{f"image_shape[{i}]": s for i, s in enumerate(image_shape)})
    _checks.positive(lr=lr)
    device, dtype = _checks.model_device(model), _checks.model_dtype(model)
    if classes is None:
        target = torch.arange(num_classes)
    else:
        if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, torch.Tensor)):
            raise TypeError(f"classes must be a sequence or tensor of class indices, got {type(classes).__name__}")
        if isinstance(classes, torch.Tensor):
            if classes.dtype.is_floating_point or classes.dtype == torch.bool:
                raise TypeError(f"classes must hold integer class indices, got dtype {classes.dtype}")
            if classes.ndim != 1:
                raise ValueError(f"classes must be a 1-D tensor [N] of class indices, got shape {tuple(classes.shape)}")
            target = classes.detach().cpu().long()
        else:
            if any(isinstance(c, bool) or not isinstance(c, int) for c in classes):
                raise TypeError(f"classes must hold integer class indices, got {list(classes)!r}")
            target = torch.tensor(list(classes), dtype=torch.long)
        if len(target) == 0:
            raise ValueError("classes is empty: name at least one target class")
        _check_classes(target, num_classes, "classes")
    target = target.to(device)
    rows = torch.arange(len(target), device=device)
    shape = (len(target), *image_shape)
    if init == "zeros":
        x0 = torch.zeros(shape)
    elif init == "grey":
        x0 = torch.full(shape, 0.5)
    elif init == "noise":
        x0 = torch.rand(shape, generator=generator)
    else:
        raise ValueError(f"init must be 'zeros', 'grey' or 'noise', got {init!r}")
    x = x0.to(device=device, dtype=dtype).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    history = []
    with eval_mode(model), torch.enable_grad():
        for step in range(steps + 1):
            logp = F.log_softmax(model(x), dim=1)                        # [N, K]
            if logp.shape[1] != num_classes:
                raise ValueError(f"num_classes is {num_classes} but the model gives {logp.shape[1]} scores")
            own = logp[rows, target]                                     # [N]: log p(classes[j] | x_j)
            history.append(own.detach().exp().cpu())
            if step == steps:
                break
            (x.grad,) = torch.autograd.grad(-own.sum(), x)               # the images only, not the weights
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)                                           # the projection onto the box
    return FoolingResult(x.detach(), history[-1], torch.stack(history))
