"""Transfer across domains and tasks (notebook 09): MNIST-M, DANN, domain confusion, multi-task weights.

- :func:`mnist_m` — MNIST-M built the way Ganin et al. built it: each MNIST digit, binarised,
  difference-blended with a random colour patch of a photo, ``|patch − digit|`` per channel; the
  photo pool is the colour photos scikit-image and scikit-learn ship (not the paper's BSDS500),
  train and test patches from disjoint regions of every photo; generated once, then cached;
- :class:`GradReverse`, :func:`grad_reverse` — the gradient-reversal layer: the identity going
  forward, ``−λ ×`` the gradient going back;
- :func:`dann_lambda`, :func:`dann_lr` — the paper's schedules ``λ_p = 2/(1 + e^{−10p}) − 1`` and
  ``μ_p = μ_0 / (1 + 10p)^{0.75}`` over training progress ``p ∈ [0, 1]``;
- :class:`DANN` — feature extractor, label predictor and domain classifier (the paper's MNIST
  architecture); :func:`dann_step` — one training step on a source batch and a target batch;
- :func:`adapt` — source-only, DANN or train-on-target training, the paper's way, checkpointed;
  :func:`predict`, :func:`accuracy`, :func:`embed`; :func:`photo_index` — which photo each
  MNIST-M image's background came from;
- :func:`domain_probe` — how well a fresh logistic regression tells the domains apart from
  frozen features, and the proxy A-distance ``2(1 − 2ε)``;
- :class:`MultiTaskNet` — a shared trunk with a main and an auxiliary head;
  :class:`UncertaintyWeights` — Kendall et al.'s learned task weights ``Σ L_i / (2σ_i²) + log σ_i``.

Shapes: images ``[N, 3, 28, 28]`` in [0, 1], features ``[N, D]``, class scores ``[N, 10]``,
domain logits ``[N]`` (1 = target).
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks

# ----------------------------------------------------------------------------------------------
# MNIST-M
# ----------------------------------------------------------------------------------------------

PHOTO_POOL = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
              "retina", "china.jpg", "flower.jpg")
TRAIN_FRACTION = 0.75       # train patches from the left 75 % of each photo, test patches from the rest
MNISTM_VERSION = 1          # bump when the construction changes: the cache key includes it
PATCH_SEEDS = {"train": 0, "test": 1}   # the seed of each split's patches


def blend(digits: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """Ganin et al.'s difference blend: ``|patch − 255·[digit > 0]|`` per channel.

    ``digits``: uint8 ``[N, 28, 28]``; ``patches``: uint8 ``[N, 28, 28, 3]`` → uint8 ``[N, 28, 28, 3]``.
    Where the digit is drawn the patch's colours are inverted; elsewhere the patch is kept.
    """
    if digits.shape != patches.shape[:3] or patches.shape[-1] != 3:
        raise ValueError(f"digits [N, H, W] and patches [N, H, W, 3] must agree, got {digits.shape} and {patches.shape}")
    d = (digits > 0).astype(np.int16)[..., None] * 255                  # binarised, [N, H, W, 1]
    return np.abs(patches.astype(np.int16) - d).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The photo pool's images, uint8 ``[H, W, 3]`` each, read once per process (read-only)."""
    from .data import load_photo

    photos = tuple(np.ascontiguousarray(load_photo(name)[..., :3]) for name in PHOTO_POOL)
    for p in photos:
        p.flags.writeable = False
    return photos


def random_patches(n: int, split: str, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random ``size × size`` colour patches from the photo pool → ``(uint8 [n, size, size,
    3], photo index [n])``: from the left ``TRAIN_FRACTION`` of each photo's width for
    ``split="train"``, from the rest for ``"test"`` — disjoint regions, so test backgrounds are
    never training backgrounds."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = np.random.default_rng(seed)
    photos = _photos()
    which = rng.integers(len(photos), size=n)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, j in enumerate(which):
        p = photos[j]
        H, W = p.shape[:2]
        cut = int(W * TRAIN_FRACTION)
        lo, hi = (0, cut - size) if split == "train" else (cut, W - size)
        x, y = rng.integers(lo, hi + 1), rng.integers(0, H - size + 1)
        out[i] = p[y:y + size, x:x + size]
    return out, which


def mnist_m(split: str = "train"):
    """MNIST-M as an :class:`cvdl.data.ImageSet` (uint8 ``[N, 3, 28, 28]``, MNIST's labels).

    Built from :func:`cvdl.data.load_mnist` (so from scikit-learn's digits when MNIST is not here —
    the ``source`` says so) with a fixed seed per split, and cached as a ``.npz`` in the course's
    cache (``generated/``), keyed by the construction's version, the split and the digits' source.
    """
    from . import config, data
    from ._io import atomic_path

    data._check_split(split)
    digits = data.load_mnist(split)
    tag = "mnist" if not digits.fallback else "digits"
    path = config.cache_dir() / "generated" / f"mnistm-v{MNISTM_VERSION}-{tag}-{split}.npz"
    source = f"generated from {digits.name} ({digits.source})"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
        if len(labels) == len(digits) and np.array_equal(labels, digits.labels.numpy()):
            return data.ImageSet(torch.from_numpy(images), torch.from_numpy(labels), list(digits.classes),
                                 "mnist_m", f"cache ({source})")
    patches, _ = random_patches(len(digits), split, seed=PATCH_SEEDS[split])
    images = blend(digits.images[:, 0].numpy(), patches).transpose(0, 3, 1, 2).copy()   # [N, 3, 28, 28]
    labels = digits.labels.numpy()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels)
    return data.ImageSet(torch.from_numpy(images), torch.from_numpy(labels), list(digits.classes), "mnist_m", source)


def photo_index(split: str = "train") -> np.ndarray:
    """Which photo of :data:`PHOTO_POOL` each :func:`mnist_m` image of ``split`` has its
    background from → int ``[N]`` (the same seeded draw as the images')."""
    from . import data

    data._check_split(split)
    return random_patches(len(data.load_mnist(split)), split, seed=PATCH_SEEDS[split])[1]


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Grey images ``[N, 1, H, W]`` → ``[N, 3, H, W]`` (the channel repeated), so that MNIST and
    MNIST-M go through the same network; colour images pass unchanged."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


# ----------------------------------------------------------------------------------------------
# The gradient-reversal layer and the schedules
# ----------------------------------------------------------------------------------------------


class GradReverse(torch.autograd.Function):
    """``R_λ(x) = x`` going forward; ``∂R/∂x = −λ I`` going back (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, x, lambd):
        ctx.lambd = float(lambd)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """The gradient-reversal layer applied to ``x`` (any shape), with coefficient ``λ ≥ 0``."""
    _checks.non_negative(lambd=lambd)
    return GradReverse.apply(x, lambd)


def _progress(p: float) -> float:
    _checks.finite(p=p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"training progress p must be in [0, 1], got {p}")
    return float(p)


def dann_lambda(p: float, gamma: float = 10.0) -> float:
    """The adaptation factor ``λ_p = 2 / (1 + exp(−γ p)) − 1``: 0 at the start (``p = 0``), → 1 at
    the end (0.99991 at ``p = 1`` with the paper's ``γ = 10``), so the domain classifier's noisy
    early signal does not disturb the features."""
    return 2.0 / (1.0 + math.exp(-gamma * _progress(p))) - 1.0


def dann_lr(p: float, lr0: float = 0.01, alpha: float = 10.0, beta: float = 0.75) -> float:
    """The paper's learning-rate annealing ``μ_p = μ_0 / (1 + α p)^β``."""
    return lr0 / (1.0 + alpha * _progress(p)) ** beta


# ----------------------------------------------------------------------------------------------
# DANN
# ----------------------------------------------------------------------------------------------


class DANN(nn.Module):
    """The paper's MNIST architecture, with batch normalisation after each convolution: features
    conv(32, 5×5) → BN → pool → conv(48, 5×5) → BN → pool (``[N, 3, 28, 28]`` → 768 features);
    label predictor FC 100 → FC 100 → 10; domain classifier behind the gradient-reversal layer,
    FC 100 → 1. (:func:`dann_step` passes the source and the target batch separately, so in
    training each domain is normalised by its own batch statistics.)

    ``forward(x, lambd=0.0)`` → ``(class scores [N, 10], domain logits [N])``. Trained without the
    domain loss, the same network is the source-only (or train-on-target) baseline.
    """

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 5), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),                 # [N, 32, 12, 12]
            nn.Conv2d(32, 48, 5), nn.BatchNorm2d(48), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())  # [N, 768]
        self.label = nn.Sequential(nn.Linear(768, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                                   nn.Linear(100, n_classes))
        self.domain = nn.Sequential(nn.Linear(768, 100), nn.ReLU(), nn.Linear(100, 1))

    def forward(self, x: torch.Tensor, lambd: float = 0.0):
        f = self.features(x - 0.5)                                         # centred pixels
        return self.label(f), self.domain(grad_reverse(f, lambd))[:, 0]


def dann_step(model: DANN, optimizer: torch.optim.Optimizer, xs: torch.Tensor, ys: torch.Tensor,
              xt: torch.Tensor | None, lambd: float) -> dict[str, float]:
    """One step: the label loss on the source batch ``(xs, ys)`` plus, when a target batch ``xt``
    is given, the domain loss (binary cross-entropy, source 0 / target 1) on both. The label
    loss trains the features and the label predictor; the domain loss trains the domain
    classifier to tell the domains apart and — through the reversal, with weight ``λ`` — the
    features to make that impossible. Returns the two losses (the domain loss is ``nan`` without
    ``xt``)."""
    model.train()
    scores, dom_s = model(xs, lambd)
    label_loss = F.cross_entropy(scores, ys)
    loss, domain_loss = label_loss, torch.tensor(float("nan"))
    if xt is not None:
        _, dom_t = model(xt, lambd)
        logits = torch.cat([dom_s, dom_t])
        truth = torch.cat([torch.zeros_like(dom_s), torch.ones_like(dom_t)])
        domain_loss = F.binary_cross_entropy_with_logits(logits, truth)
        loss = label_loss + domain_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"label_loss": float(label_loss.detach()), "domain_loss": float(domain_loss.detach())}


@torch.no_grad()
def embed(model: DANN, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The feature extractor's output for ``x`` ``[N, 3, 28, 28]`` → ``[N, 768]`` (eval mode, CPU)."""
    model.eval()
    dev = _checks.model_device(model)
    return torch.cat([model.features(x[i:i + batch_size].to(dev) - 0.5).cpu() for i in range(0, len(x), batch_size)])


def domain_probe(source: torch.Tensor, target: torch.Tensor, seed: int = 0) -> tuple[float, float]:
    """How separable two domains are from features ``source [N, D]`` and ``target [M, D]``: a fresh
    logistic regression (scikit-learn, standardised features) trained on half of each, its test
    error ``ε`` on the other half → ``(accuracy, proxy A-distance 2(1 − 2ε))`` (Ben-David et al.;
    0 when the domains cannot be told apart, 2 when they are perfectly separable)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(f"features must be [N, D] and [M, D], got {tuple(source.shape)} and {tuple(target.shape)}")
    X = torch.cat([source, target]).double().numpy()
    y = np.r_[np.zeros(len(source)), np.ones(len(target))]
    Xa, Xb, ya, yb = train_test_split(X, y, test_size=0.5, random_state=seed, stratify=y)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    acc = float(clf.fit(Xa, ya).score(Xb, yb))
    return acc, 2.0 * (1.0 - 2.0 * (1.0 - acc))


# ----------------------------------------------------------------------------------------------
# Multi-task learning: task weights from learned uncertainties
# ----------------------------------------------------------------------------------------------


class UncertaintyWeights(nn.Module):
    """Kendall, Gal & Cipolla (2018): weight task losses by learned noise levels.

    For regression tasks with Gaussian noise of standard deviation ``σ_i`` the negative
    log-likelihood is ``Σ_i MSE_i / (2σ_i²) + log σ_i`` (+ constants); learning ``s_i = log σ_i²``
    with the network gives noisy tasks small weights, and ``σ_i`` converges to each task's noise
    level. ``forward(losses [K])`` → the total; :attr:`sigma` → ``[K]``.
    """

    def __init__(self, n_tasks: int):
        super().__init__()
        _checks.positive_int(n_tasks=n_tasks)
        self.log_var = nn.Parameter(torch.zeros(n_tasks))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        if losses.shape != self.log_var.shape:
            raise ValueError(f"expected {len(self.log_var)} task losses, got shape {tuple(losses.shape)}")
        return (0.5 * torch.exp(-self.log_var) * losses + 0.5 * self.log_var).sum()

    @property
    def sigma(self) -> torch.Tensor:
        return torch.exp(0.5 * self.log_var.detach())


# ----------------------------------------------------------------------------------------------
# Training: source-only, DANN, train-on-target — one loop
# ----------------------------------------------------------------------------------------------

METHODS = ("source", "dann", "target")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The predicted class of every image of ``x [N, 3, 28, 28]`` → ``[N]`` (eval mode, on CPU);
    ``model(x)`` returns ``(class scores, ...)`` as :class:`DANN` and :class:`MultiTaskNet` do."""
    model.eval()
    dev = _checks.model_device(model)
    return torch.cat([model(x[i:i + batch_size].to(dev))[0].argmax(1).cpu() for i in range(0, len(x), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Label accuracy of ``model`` on images ``x [N, 3, 28, 28]`` with labels ``y [N]``."""
    return float((predict(model, x, batch_size) == y.cpu()).float().mean())


def adapt(method: str, source, target, target_val=None, *, steps: int = 3000, batch_size: int = 64,
          lr0: float = 0.01, momentum: float = 0.9, lambda_max: float = 1.0, seed: int = 0, eval_every: int | None = None,
          n_classes: int = 10, device=None, checkpoint: str | None = None, progress: bool = True):
    """Train a :class:`DANN` network the paper's way (SGD with momentum, ``lr`` annealed by
    :func:`dann_lr`, ``λ`` by :func:`dann_lambda`) → ``(model, History)``.

    ``method``: ``"source"`` — labelled source batches only (the lower bound); ``"dann"`` —
    labelled source batches plus unlabelled target batches through the gradient-reversal layer;
    ``"target"`` — labelled *target* batches only (the upper bound: what labels would buy).
    ``source``, ``target``: ``(images [N, 3, 28, 28] in [0, 1], labels [N])`` — DANN never reads
    the target labels. ``target_val``: ``(images, labels)`` scored every ``eval_every`` steps
    (the curves); the History's rows hold ``step``, ``label_loss``, ``domain_loss`` (running means
    since the last row), ``lambda``, ``lr`` and ``target_acc``. ``lambda_max`` scales the λ
    schedule (0: target batches go through the network and train the domain classifier, but no
    reversed gradient reaches the features — the control for what the reversal itself does).
    ``checkpoint``: a name; a run with
    the same settings is loaded instead of repeated.
    """
    import time

    from tqdm.auto import tqdm

    from .config import is_ci
    from .device import get_device
    from .train import History, _fingerprint, checkpoint_path, save_checkpoint

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _checks.positive_int(steps=steps, batch_size=batch_size)
    _checks.positive(lr0=lr0)
    _checks.non_negative(lambda_max=lambda_max)
    eval_every = eval_every or max(1, steps // 20)
    device = torch.device(device) if device is not None else get_device()
    (xs, ys), (xt, yt) = source, target
    if len(xs) == 0 or len(xt) == 0:
        raise ValueError(f"source and target need images, got {len(xs)} source and {len(xt)} target images")
    torch.manual_seed(seed)
    model = DANN(n_classes).to(device)
    path = None
    if checkpoint is not None:
        settings = dict(method=method, steps=steps, batch_size=batch_size, lr0=lr0, momentum=momentum, seed=seed,
                        lambda_max=lambda_max,
                        eval_every=eval_every, source=_fingerprint(source), target=_fingerprint(target),
                        val=_fingerprint(target_val) if target_val is not None else None)
        path = checkpoint_path(checkpoint, model, settings)
        if os.path.exists(path):
            state = torch.load(path, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            return model.to(device).eval(), History.from_dict(state["history"], loaded=True)

    opt = torch.optim.SGD(model.parameters(), lr=lr0, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    hist, sums, count = History(), {"label_loss": 0.0, "domain_loss": 0.0}, 0
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=checkpoint or method, unit="step", disable=(not progress) or is_ci(), leave=True)
    for step in bar:
        p = step / steps
        lr, lam = dann_lr(p, lr0), lambda_max * dann_lambda(p)
        for group in opt.param_groups:
            group["lr"] = lr
        i = torch.randint(0, len(xs), (batch_size,), generator=gen)
        j = torch.randint(0, len(xt), (batch_size,), generator=gen)
        if method == "source":
            out = dann_step(model, opt, xs[i].to(device), ys[i].to(device), None, 0.0)
        elif method == "target":
            out = dann_step(model, opt, xt[j].to(device), yt[j].to(device), None, 0.0)
        else:
            out = dann_step(model, opt, xs[i].to(device), ys[i].to(device), xt[j].to(device), lam)
        sums = {k: sums[k] + out[k] for k in sums}
        count += 1
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            row = {"step": step + 1, **{k: v / count for k, v in sums.items()}, "lambda": lam, "lr": lr,
                   "time": time.perf_counter() - start}
            if target_val is not None:
                row["target_acc"] = accuracy(model, *target_val)
            hist.rows.append(row)
            sums, count = {k: 0.0 for k in sums}, 0
            bar.set_postfix({k: f"{row[k]:.3f}" for k in ("label_loss", "target_acc") if k in row})
    hist.seconds = time.perf_counter() - start
    model.eval()
    if path is not None:
        save_checkpoint(path, model, hist)
    return model, hist


# ----------------------------------------------------------------------------------------------
# Multi-task learning with an auxiliary task
# ----------------------------------------------------------------------------------------------


class MultiTaskNet(nn.Module):
    """A shared trunk (DANN's features and a 100-unit layer) with two linear heads: the main
    task's class scores (``n_main``) and an auxiliary task's outputs (``n_aux``; notebook 09: the
    784 pixel logits of the digit's ink mask). ``forward(x)`` → ``(main scores [N, n_main],
    auxiliary outputs [N, n_aux])``."""

    def __init__(self, n_main: int = 10, n_aux: int = 784):
        super().__init__()
        self.trunk = nn.Sequential(DANN().features, nn.Linear(768, 100), nn.ReLU())
        self.main, self.aux = nn.Linear(100, n_main), nn.Linear(100, n_aux)

    def forward(self, x: torch.Tensor):
        h = self.trunk(x - 0.5)
        return self.main(h), self.aux(h)
