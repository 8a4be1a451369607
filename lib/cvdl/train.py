"""Training: one ``fit`` / ``evaluate`` loop for every notebook.

- data held on the device and batched by indexing (:class:`TensorLoader`) for small datasets,
  or any iterable of ``(x, y)`` batches (e.g. a ``DataLoader``);
- a ``tqdm.auto`` progress bar (quiet under CI), a :class:`History` of losses and accuracies;
- mixed precision on CUDA; checkpoints keyed by the exact settings: loaded when they exist,
  saved otherwise, always loadable on CPU.

>>> hist = fit(model, (x_train, y_train), (x_test, y_test), epochs=3, checkpoint="mnist-cnn")
>>> evaluate(model, (x_test, y_test))["acc"]
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import checkpoint_dir, is_ci
from .device import get_device

Batch = tuple[torch.Tensor, torch.Tensor]


class TensorLoader:
    """Batches of ``(x[idx], y[idx])`` from tensors kept on ``device`` — no per-sample Python.

    ``transform`` (optional) is applied to each *batch* of inputs on the device, e.g. a random
    augmentation. With ``shuffle`` the order changes every epoch, drawn from ``seed``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, shuffle: bool = False,
                 device: torch.device | str | None = None, transform: Callable | None = None,
                 drop_last: bool = False, seed: int = 0):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
        if len(x) == 0:
            raise ValueError("cannot batch an empty dataset (x has length 0)")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.device = torch.device(device) if device is not None else x.device
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.batch_size, self.shuffle, self.transform = batch_size, shuffle, transform
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.x)
        order = (torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n))
        order = order.to(self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb = self.x[idx]
            if self.transform is not None:
                xb = self.transform(xb)
            yield xb, self.y[idx]


@dataclass
class History:
    """Per-epoch metrics: ``history["train_loss"]`` is a list with one value per epoch."""

    rows: list[dict] = field(default_factory=list)
    loaded: bool = False  # True when the model came from a checkpoint instead of training
    seconds: float = 0.0  # training time (of the original run when loaded)

    def __getitem__(self, key: str) -> list:
        return [r.get(key) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def last(self) -> dict:
        return self.rows[-1] if self.rows else {}

    def to_dict(self) -> dict:
        return {"rows": self.rows, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict, loaded: bool = False) -> "History":
        return cls(rows=list(d["rows"]), loaded=loaded, seconds=float(d.get("seconds", 0.0)))


def _as_batches(data, batch_size: int, device, shuffle: bool, transform=None, seed: int = 0):
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return TensorLoader(data[0], data[1], batch_size, shuffle, device, transform, seed=seed)
    if hasattr(data, "images") and hasattr(data, "labels"):  # an ImageSet: uint8 → float [0, 1]
        return TensorLoader(data.float(), data.labels, batch_size, shuffle, device, transform, seed=seed)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)):
        return data
    raise ValueError("data must be (x, y) tensors, an ImageSet, or an iterable of (x, y) batches; "
                     f"got {type(data).__name__}")


def _fingerprint(obj) -> str:
    """A cheap, stable description of training data for checkpoint keys."""
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, torch.Tensor) for t in obj):
        x, y = obj
        xs = x.detach().float().flatten()
        step = max(1, xs.numel() // 4096)
        return f"{tuple(x.shape)}|{tuple(y.shape)}|{xs[::step].sum().item():.6g}|{y.float().sum().item():.6g}"
    if hasattr(obj, "images"):
        return _fingerprint((obj.images, obj.labels))
    return type(obj).__name__


def _state_digest(model: nn.Module) -> str:
    """A digest of the model's starting weights: the same settings from other weights (e.g.
    fine-tuning vs training from scratch) must not share a checkpoint."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes() if v.dtype != torch.bfloat16
                 else v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def checkpoint_path(name: str, model: nn.Module, settings: dict) -> str:
    """Where a checkpoint for these exact settings lives: ``<cache>/checkpoints/<name>-<hash>.pt``."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"checkpoint name must be a non-empty string without '/', got {name!r}")
    key = json.dumps({"model": repr(model), "settings": settings}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return str(checkpoint_dir() / f"{name}-{digest}.pt")


def _save_atomic(obj, path: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".part",
                               dir=os.path.dirname(path))
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _make_optimizer(name, params, lr, weight_decay, momentum):
    if isinstance(name, torch.optim.Optimizer):
        return name
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    raise ValueError(f"optimizer must be 'adam', 'adamw', 'sgd' or a torch optimizer, got {name!r}")


def fit(model: nn.Module, train, val=None, *, epochs: int = 1, lr: float = 1e-3,
        optimizer: str | torch.optim.Optimizer = "adam", weight_decay: float = 0.0, momentum: float = 0.9,
        schedule: str | None = "onecycle", batch_size: int = 128, augment: Callable | None = None,
        loss_fn: Callable = F.cross_entropy, device: torch.device | str | None = None,
        amp: bool = True, checkpoint: str | None = None, progress: bool = True, seed: int = 0,
        params: Iterable | None = None) -> History:
    """Train ``model`` on ``train`` for ``epochs``; evaluate on ``val`` after each epoch.

    ``train`` / ``val``: ``(x, y)`` tensors (kept on the device and batched by indexing), an
    ``ImageSet``, or any iterable of ``(x, y)`` batches. ``augment`` is applied to each training
    batch. ``schedule``: ``"onecycle"`` (warm-up then anneal, per step) or ``None``.
    ``params``: the parameters to train (default: all) — e.g. only the head when fine-tuning.
    ``checkpoint``: a name; when a checkpoint for the same model, data and settings exists, it is
    loaded instead of training (``History.loaded`` is then True), otherwise one is saved.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if schedule not in ("onecycle", None):
        raise ValueError(f"schedule must be 'onecycle' or None, got {schedule!r}")
    device = torch.device(device) if device is not None else get_device()
    model.to(device)

    path = None
    if checkpoint is not None:
        settings = dict(epochs=epochs, lr=lr, optimizer=str(optimizer), weight_decay=weight_decay,
                        momentum=momentum, schedule=schedule, batch_size=batch_size,
                        augment=getattr(augment, "__name__", repr(augment)), loss=getattr(loss_fn, "__name__", "loss"),
                        seed=seed, train=_fingerprint(train), val=_fingerprint(val) if val is not None else None,
                        trainable=None if params is None else "subset", init=_state_digest(model))
        path = checkpoint_path(checkpoint, model, settings)
        if os.path.exists(path):
            state = torch.load(path, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            model.to(device).eval()
            return History.from_dict(state["history"], loaded=True)

    torch.manual_seed(seed)
    train_batches = _as_batches(train, batch_size, device, shuffle=True, transform=augment, seed=seed)
    val_batches = _as_batches(val, 1024, device, shuffle=False) if val is not None else None
    params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(optimizer, params, lr, weight_decay, momentum)
    steps = max(1, epochs * len(train_batches)) if hasattr(train_batches, "__len__") else None
    # OneCycleLR needs a few steps per phase (it divides by zero when pct_start·steps is 1 or 2):
    # shorter runs keep a constant learning rate
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
             if schedule == "onecycle" and steps and steps >= 12 else None)
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    from tqdm.auto import tqdm

    hist = History()
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc=checkpoint or "training", unit="epoch",
               disable=(not progress) or is_ci(), leave=True)
    for epoch in bar:
        model.train()
        tot_loss, tot_correct, tot_n = 0.0, 0, 0
        for xb, yb in train_batches:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                out = model(xb)
                loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if sched is not None:
                sched.step()
            n = len(yb)
            tot_loss += loss.item() * n
            if out.ndim == 2 and yb.ndim == 1:
                tot_correct += (out.argmax(1) == yb).sum().item()
            tot_n += n
        row = {"epoch": epoch + 1, "train_loss": tot_loss / max(tot_n, 1),
               "train_acc": tot_correct / max(tot_n, 1), "time": time.perf_counter() - start}
        if val_batches is not None:
            ev = evaluate(model, val_batches, device=device, loss_fn=loss_fn)
            row.update(val_loss=ev["loss"], val_acc=ev["acc"])
        hist.rows.append(row)
        bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k in ("train_loss", "val_acc")})
    hist.seconds = time.perf_counter() - start
    model.eval()
    if path is not None:
        _save_atomic({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                      "history": hist.to_dict()}, path)
    return hist


@torch.no_grad()
def evaluate(model: nn.Module, data, *, device: torch.device | str | None = None,
             loss_fn: Callable = F.cross_entropy, batch_size: int = 1024) -> dict:
    """Mean loss and accuracy of ``model`` on ``data`` (same forms as :func:`fit` accepts)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batches = _as_batches(data, batch_size, device, shuffle=False)
    model.eval()
    tot_loss, correct, n = 0.0, 0, 0
    for xb, yb in batches:
        xb, yb = xb.to(device), yb.to(device)
        out = model(xb)
        tot_loss += loss_fn(out, yb, reduction="sum").item() if _takes_reduction(loss_fn) else loss_fn(out, yb).item() * len(yb)
        if out.ndim == 2 and yb.ndim == 1:
            correct += (out.argmax(1) == yb).sum().item()
        n += len(yb)
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return {"loss": tot_loss / n, "acc": correct / n, "n": n}


def _takes_reduction(fn) -> bool:
    return fn in (F.cross_entropy, F.nll_loss, F.mse_loss, F.binary_cross_entropy_with_logits)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Model outputs for ``x`` (``[N, ...]``), computed in batches on the model's device; on CPU."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a tensor, got {type(x).__name__}")
    device = next(model.parameters()).device
    model.eval()
    outs = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)
