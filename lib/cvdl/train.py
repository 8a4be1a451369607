"""Training: one loop for every task in the course.

The loop is :func:`train_one_epoch` — a dozen lines that notebook 03 shows in full. A *batch* is
any structure of tensors (a tensor, a tuple, a list, a dict, nested): :func:`to_device` moves all
of it. What the loop does with a batch is one small function, ``forward(model, batch) ->
(outputs, targets)``; the default, :func:`supervised`, reads ``(inputs, targets)`` and calls
``model(inputs)``. ``loss_fn(outputs, targets)`` gives the scalar to minimise, and ``metrics``
(``{name: fn(outputs, targets)}``) are averaged over the epoch. So the same loop trains

- a classifier: batches ``(x [N, C, H, W], y [N])``, ``loss_fn=F.cross_entropy``;
- a detector or any model with a dict of targets: ``(x, {"labels": [N], "boxes": [N, 4]})``;
- a sequence model: ``(tokens [N, T], next_tokens [N, T])`` with a loss over every position;
- a metric-learning model: ``(anchor, positive, negative)`` with a ``forward`` that embeds all three.

:func:`fit` adds what a notebook wants around that loop: data given as tensors or as any
re-iterable of batches, an optimiser and a one-cycle learning-rate schedule, a ``tqdm``
progress bar (quiet under CI), a :class:`History` of every epoch, mixed precision on CUDA, and
checkpoints keyed by the exact settings — loaded when they exist, saved otherwise, always
loadable on CPU. Losses and metrics are summed on the device and read once per epoch, so a GPU is
not made to wait for the host at every step.

>>> hist = fit(model, (x_train, y_train), (x_test, y_test), epochs=3, checkpoint="mnist-cnn")
>>> evaluate(model, (x_test, y_test))["acc"]
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks
from ._io import atomic_path
from .config import checkpoint_dir, is_ci
from .device import get_device

# ----------------------------------------------------------------------------------------------
# Batches of any structure
# ----------------------------------------------------------------------------------------------


def to_device(batch, device: torch.device | str, non_blocking: bool = True):
    """``batch`` with every tensor in it moved to ``device``: tensors, tuples (named ones too),
    lists and dicts, nested to any depth; anything else (ints, strings, None) is left as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return type(batch)((k, to_device(v, device, non_blocking)) for k, v in batch.items()) \
            if type(batch) is not dict else {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, non_blocking) for v in batch)
    return batch


def batch_size_of(obj) -> int:
    """How many items a batch holds: the first dimension of its first tensor, or the length of a
    list of per-item entries (e.g. a detection batch's list of target dicts)."""
    if isinstance(obj, torch.Tensor):
        return int(obj.shape[0]) if obj.ndim else 1
    if isinstance(obj, Mapping):
        for v in obj.values():
            return batch_size_of(v)
    if isinstance(obj, list) and obj and not isinstance(obj[0], torch.Tensor):
        return len(obj)  # a list of per-item structures (dicts, tuples)
    if isinstance(obj, (list, tuple)) and obj:
        return batch_size_of(obj[0]) if isinstance(obj, tuple) else len(obj)
    raise ValueError(f"cannot tell the batch size of {type(obj).__name__}; "
                     "pass tensors [N, ...], dicts of them or lists of per-item entries")


def _index(data, idx: torch.Tensor):
    """The rows ``idx`` of every tensor in a structure of tensors."""
    if isinstance(data, torch.Tensor):
        return data[idx]
    if isinstance(data, Mapping):
        return {k: _index(v, idx) for k, v in data.items()}
    return type(data)(_index(v, idx) for v in data)


def _leaves(data) -> list[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        return [data]
    if isinstance(data, Mapping):
        return [t for v in data.values() for t in _leaves(v)]
    if isinstance(data, (list, tuple)):
        return [t for v in data for t in _leaves(v)]
    raise TypeError(f"a dataset held in memory must be made of tensors (in tuples or dicts), got "
                    f"{type(data).__name__}")


class TensorLoader:
    """Batches of rows of tensors kept on ``device`` — no per-sample Python.

    ``TensorLoader(x, y)`` yields ``(x[idx], y[idx])``; any number of parts works
    (``TensorLoader(anchors, positives, negatives)``), and a part may be a dict of tensors
    (``TensorLoader(x, {"labels": y, "boxes": b})``). Every tensor must have the same length N.
    ``transform`` (optional) is applied to each batch of the *first* part on the device, e.g. a
    random augmentation. With ``shuffle`` the order changes every epoch, drawn from ``seed``.
    """

    def __init__(self, x, y=None, *more, batch_size: int = 128, shuffle: bool = False,
                 device: torch.device | str | None = None, transform: Callable | None = None,
                 drop_last: bool = False, seed: int = 0):
        parts = (x,) if y is None else (x, y, *more)
        for i, p in enumerate(parts):
            if not isinstance(p, (torch.Tensor, Mapping)):
                name = "x" if i == 0 else "y" if i == 1 else f"part {i}"
                raise TypeError(f"x and y must be tensors (or dicts of tensors), got {name} of type "
                                f"{type(p).__name__}")
        leaves = _leaves(parts)
        lengths = sorted({len(t) for t in leaves})
        if len(lengths) != 1:
            raise ValueError(f"x and y must have the same length, got {' and '.join(map(str, lengths))}")
        if lengths[0] == 0:
            raise ValueError("cannot batch an empty dataset (x has length 0)")
        _checks.positive_int(batch_size=batch_size)
        self.device = torch.device(device) if device is not None else leaves[0].device
        self.parts = to_device(parts, self.device, non_blocking=False)
        self.n = lengths[0]
        self.batch_size, self.shuffle, self.transform = batch_size, shuffle, transform
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        order = order.to(self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = _index(self.parts, idx)
            if self.transform is not None:
                batch = (self.transform(batch[0]), *batch[1:])
            yield batch if len(batch) > 1 else batch[0]


def _in_memory(data) -> bool:
    """A dataset held as tensors: a tuple/list of tensors or dicts of tensors, one length."""
    return (isinstance(data, (tuple, list)) and len(data) >= 1
            and all(isinstance(p, torch.Tensor) or (isinstance(p, Mapping) and p and all(
                isinstance(v, torch.Tensor) for v in p.values())) for p in data))


def as_batches(data, batch_size: int = 128, device=None, shuffle: bool = False,
               transform: Callable | None = None, seed: int = 0) -> Iterable:
    """What :func:`fit` and :func:`evaluate` iterate over.

    - ``(x, y)`` (or more parts; a part may be a dict of tensors): a :class:`TensorLoader`;
    - an ``ImageSet``: its images as floats in [0, 1] and its labels, in a :class:`TensorLoader`;
    - any other re-iterable of batches (a ``DataLoader``, a list of batches) as it is.
    """
    if _in_memory(data):
        return TensorLoader(*data, batch_size=batch_size, shuffle=shuffle, device=device,
                            transform=transform, seed=seed)
    if hasattr(data, "images") and hasattr(data, "labels"):  # an ImageSet: uint8 → float [0, 1]
        return TensorLoader(data.float(), data.labels, batch_size=batch_size, shuffle=shuffle,
                            device=device, transform=transform, seed=seed)
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        if iter(data) is data:
            raise TypeError(f"data must be re-iterable (a list of batches or a DataLoader), got the "
                            f"one-shot iterator {type(data).__name__}: it would be empty after one epoch")
        if transform is not None:
            raise ValueError("augment works on tensors held in memory; for a DataLoader, put the "
                             "augmentation in its dataset")
        return data
    raise TypeError("data must be (x, y) tensors, an ImageSet, or an iterable of batches; "
                    f"got {type(data).__name__}")


# ----------------------------------------------------------------------------------------------
# What a step computes: forward, metrics, the running means
# ----------------------------------------------------------------------------------------------


def supervised(model: nn.Module, batch) -> tuple:
    """The default ``forward``: a batch ``(inputs, targets)`` → ``(model(inputs), targets)``."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"the default forward expects batches (inputs, targets), got "
                         f"{type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}; "
                         "pass forward=... to say how a batch feeds the model")
    inputs, targets = batch
    return model(inputs), targets


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The fraction of rows whose highest score is the label: ``scores [N, K]``, ``labels [N]``."""
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"accuracy needs scores [N, K] and labels [N], got {tuple(scores.shape)} and "
                         f"{tuple(labels.shape)}; pass metrics={{}} or your own metric for other outputs")
    return (scores.argmax(1) == labels).float().mean()


class Meter:
    """Running, item-weighted means of the loss and of ``metrics``, kept on the device.

    A metric ``fn(outputs, targets)`` returns its mean over the batch (a 0-d tensor or a number),
    or ``(mean, weight)`` when it averages over something other than the batch's items (tokens,
    boxes). :meth:`compute` reads every value back once.
    """

    def __init__(self, metrics: Mapping[str, Callable] | None = None):
        self.metrics = dict(metrics or {})
        self.sums: dict[str, torch.Tensor | float] = {}
        self.weights: dict[str, torch.Tensor | float] = {}

    def _add(self, name: str, mean, weight) -> None:
        value = mean.detach().float() * weight if isinstance(mean, torch.Tensor) else float(mean) * weight
        self.sums[name] = self.sums.get(name, 0.0) + value
        self.weights[name] = self.weights.get(name, 0.0) + weight

    @torch.no_grad()
    def update(self, loss: torch.Tensor, outputs, targets) -> None:
        n = batch_size_of(targets if targets is not None else outputs)
        self._add("loss", loss, n)
        for name, fn in self.metrics.items():
            value = fn(outputs, targets)
            mean, weight = value if isinstance(value, tuple) else (value, n)
            self._add(name, mean, weight)

    def compute(self) -> dict[str, float]:
        if not self.weights:
            raise ValueError("no batches were seen (is the data empty?)")
        out = {}
        for k in self.sums:
            w = float(self.weights[k])
            out[k] = float(self.sums[k]) / w if w else float("nan")
        out["n"] = int(float(self.weights["loss"]))
        return out


def _default_metrics(metrics, loss_fn) -> dict:
    if metrics is not None:
        return dict(metrics)
    # the default loss is classification's, so is the default metric; other losses name theirs
    return {"acc": accuracy} if loss_fn is F.cross_entropy else {}


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def train_one_epoch(model: nn.Module, batches: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                    *, device: torch.device, forward: Callable = supervised, metrics: Mapping | None = None,
                    scheduler=None, scaler: torch.amp.GradScaler | None = None,
                    clip_grad: float | None = None) -> dict[str, float]:
    """One pass over ``batches``; returns the epoch's mean ``loss``, metrics and item count ``n``.

    ``scaler`` (a ``GradScaler``, enabled on CUDA) turns on mixed precision; ``clip_grad`` caps the
    gradients' total norm (the usual remedy for exploding gradients in recurrent networks).
    """
    scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)
    meter = Meter(metrics)
    model.train()
    for batch in batches:
        batch = to_device(batch, device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=scaler.is_enabled()):
            outputs, targets = forward(model, batch)
            loss = loss_fn(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if clip_grad is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        meter.update(loss, outputs, targets)       # sums stay on the device: no sync per step
    return meter.compute()


@torch.no_grad()
def evaluate(model: nn.Module, data, *, loss_fn: Callable = F.cross_entropy, metrics: Mapping | None = None,
             forward: Callable = supervised, device: torch.device | str | None = None,
             batch_size: int = 1024) -> dict[str, float]:
    """Mean loss and metrics of ``model`` on ``data`` (the forms :func:`fit` accepts), in eval mode.

    Returns ``{"loss": ..., <metric>: ..., "n": items}``; with the default loss the metric is
    ``"acc"`` (see :func:`fit`).
    """
    _checks.module(model)
    device = torch.device(device) if device is not None else _checks.model_device(model)
    meter = Meter(_default_metrics(metrics, loss_fn))
    model.eval()
    for batch in as_batches(data, batch_size, device, shuffle=False):
        outputs, targets = forward(model, to_device(batch, device))
        meter.update(loss_fn(outputs, targets), outputs, targets)
    try:
        return meter.compute()
    except ValueError:
        raise ValueError("cannot evaluate on an empty dataset") from None


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Model outputs for ``x (Tensor[N, ...])``, computed in batches on the model's device, in eval
    mode; returned on the CPU."""
    _checks.tensor(x)
    device = _checks.model_device(model)
    model.eval()
    outs = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


# ----------------------------------------------------------------------------------------------
# History and checkpoints
# ----------------------------------------------------------------------------------------------


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


def _fingerprint(obj, depth: int = 0) -> str:
    """A cheap, stable description of data for checkpoint keys (shapes and sampled sums)."""
    if isinstance(obj, torch.Tensor):
        flat = obj.detach().flatten()
        step = max(1, flat.numel() // 4096)
        total = flat[::step].double().sum().item() if flat.numel() else 0.0
        return f"T{tuple(obj.shape)}:{str(obj.dtype)[6:]}:{total:.6g}"
    if hasattr(obj, "images") and hasattr(obj, "labels"):
        return _fingerprint((obj.images, obj.labels), depth)
    if isinstance(obj, Mapping):
        return "{" + ",".join(f"{k}={_fingerprint(v, depth + 1)}" for k, v in sorted(obj.items(), key=str)) + "}"
    if isinstance(obj, (list, tuple)) and depth < 3:
        step = max(1, len(obj) // 16)  # long lists of batches: every k-th batch, and the length
        return f"{type(obj).__name__}{len(obj)}[" + ",".join(_fingerprint(v, depth + 1) for v in obj[::step]) + "]"
    dataset = getattr(obj, "dataset", None)
    if isinstance(dataset, torch.utils.data.TensorDataset):
        return f"{type(obj).__name__}({_fingerprint(dataset.tensors, depth + 1)}, batch_size={obj.batch_size})"
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return repr(obj)
    return f"{type(obj).__name__}(len={len(obj) if hasattr(obj, '__len__') else '?'})"


def _code_digest(code: types.CodeType) -> str:
    """What a function *does*: its bytecode, constants (nested functions included) and the
    global names it reads — not its name."""
    h = hashlib.sha256(code.co_code)
    for c in code.co_consts:
        h.update((_code_digest(c) if isinstance(c, types.CodeType) else repr(c)).encode())
    h.update(repr(code.co_names).encode())
    return h.hexdigest()[:12]


def describe(obj, _depth: int = 0) -> str:
    """A stable description of a callable or setting for checkpoint keys, independent of names and
    memory addresses: a function by its code, closure and defaults; a partial by its parts; a
    module by its ``repr`` and weights; another object by its type's code and its attributes."""
    if _depth > 4:
        return "..."
    d = functools.partial(describe, _depth=_depth + 1)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return repr(obj)
    if isinstance(obj, torch.Tensor):
        return _fingerprint(obj)
    if isinstance(obj, (list, tuple)):
        return f"{type(obj).__name__}(" + ",".join(d(v) for v in obj) + ")"
    if isinstance(obj, Mapping):
        return "{" + ",".join(f"{k}:{d(v)}" for k, v in sorted(obj.items(), key=str)) + "}"
    if isinstance(obj, functools.partial):
        return f"partial({d(obj.func)},{d(obj.args)},{d(obj.keywords)})"
    if isinstance(obj, types.MethodType):
        return f"method({d(obj.__func__)},self={d(obj.__self__)})"
    if isinstance(obj, types.FunctionType):
        cells = tuple(c.cell_contents for c in obj.__closure__ or ())
        return f"fn#{_code_digest(obj.__code__)}({d(cells)},{d(obj.__defaults__)},{d(obj.__kwdefaults__)})"
    if isinstance(obj, nn.Module):
        return f"{obj!r}#{_state_digest(obj)}"
    if isinstance(obj, (types.BuiltinFunctionType, type)):
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"
    if type(obj).__repr__ is not object.__repr__ and " at 0x" not in repr(obj):
        return repr(obj)
    methods = sorted((k, _code_digest(v.__code__)) for k, v in vars(type(obj)).items()
                     if isinstance(v, types.FunctionType))
    return f"obj({d(methods)},{d(dict(getattr(obj, '__dict__', {})))})"


def _state_digest(model: nn.Module) -> str:
    """A digest of the model's weights: the same settings from other starting weights (e.g.
    fine-tuning vs training from scratch) must not share a checkpoint."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        v = v.detach().cpu()
        h.update((v.float() if v.dtype == torch.bfloat16 else v).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def checkpoint_path(name: str, model: nn.Module, settings: dict) -> str:
    """Where a checkpoint for these exact settings lives: ``<cache>/checkpoints/<name>-<hash>.pt``."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"checkpoint name must be a non-empty string without '/', got {name!r}")
    key = json.dumps({"model": repr(model), "settings": settings}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return str(checkpoint_dir() / f"{name}-{digest}.pt")


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


# ----------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------


def fit(model: nn.Module, train, val=None, *, epochs: int = 1, lr: float = 1e-3,
        optimizer: str | torch.optim.Optimizer = "adam", weight_decay: float = 0.0, momentum: float = 0.9,
        schedule: str | None = "onecycle", batch_size: int = 128, augment: Callable | None = None,
        loss_fn: Callable = F.cross_entropy, metrics: Mapping[str, Callable] | None = None,
        forward: Callable = supervised, clip_grad: float | None = None,
        device: torch.device | str | None = None, amp: bool = True, checkpoint: str | None = None,
        progress: bool = True, seed: int = 0, params: Iterable | None = None) -> History:
    """Train ``model`` on ``train`` for ``epochs`` with :func:`train_one_epoch`; evaluate on ``val``
    after each epoch.

    ``train`` / ``val``: ``(x, y)`` tensors (kept on the device and batched by indexing; ``y`` may
    be a dict of tensors, and more parts may follow), an ``ImageSet``, or any re-iterable of
    batches of any structure (a ``DataLoader``, a list). ``forward(model, batch) -> (outputs,
    targets)`` says how a batch feeds the model (default :func:`supervised`);
    ``loss_fn(outputs, targets)`` is minimised; ``metrics`` ``{name: fn(outputs, targets)}`` are
    reported per epoch as ``train_<name>`` and ``val_<name>`` (default: ``{"acc": accuracy}`` with
    the default cross-entropy loss, none with another loss). ``augment`` is applied to each
    training batch's inputs. ``schedule``: ``"onecycle"`` (warm-up then anneal, per step) or
    ``None``. ``params``: the parameters to train (default: all) — e.g. only the head when
    fine-tuning. ``checkpoint``: a name; when a checkpoint for the same model, starting weights,
    data and settings exists, it is loaded instead of training (``History.loaded`` is then True),
    otherwise one is saved. Functions in the settings are keyed by their code, not their names.
    """
    _checks.module(model)
    _checks.non_negative_int(epochs=epochs)
    _checks.positive(lr=lr)
    _checks.positive_int(batch_size=batch_size)
    if schedule not in ("onecycle", None):
        raise ValueError(f"schedule must be 'onecycle' or None, got {schedule!r}")
    if clip_grad is not None:
        _checks.positive(clip_grad=clip_grad)
    metrics = _default_metrics(metrics, loss_fn)
    device = torch.device(device) if device is not None else get_device()
    model.to(device)

    path = None
    if checkpoint is not None:
        settings = dict(epochs=epochs, lr=lr, optimizer=describe(optimizer) if not isinstance(optimizer, str)
                        else optimizer, weight_decay=weight_decay, momentum=momentum, schedule=schedule,
                        batch_size=batch_size, augment=describe(augment), loss=describe(loss_fn),
                        forward=describe(forward), metrics=describe(metrics), clip_grad=clip_grad,
                        seed=seed, train=_fingerprint(train), val=_fingerprint(val) if val is not None else None,
                        trainable=None if params is None else "subset", init=_state_digest(model))
        path = checkpoint_path(checkpoint, model, settings)
        if os.path.exists(path):
            state = torch.load(path, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            model.to(device).eval()
            return History.from_dict(state["history"], loaded=True)

    torch.manual_seed(seed)
    train_batches = as_batches(train, batch_size, device, shuffle=True, transform=augment, seed=seed)
    params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(optimizer, params, lr, weight_decay, momentum)
    steps = epochs * len(train_batches) if hasattr(train_batches, "__len__") else None
    # OneCycleLR needs a few steps per phase (it divides by zero when pct_start·steps is 1 or 2):
    # shorter runs keep a constant learning rate
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
             if schedule == "onecycle" and steps and steps >= 12 else None)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")

    from tqdm.auto import tqdm

    hist = History()
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc=checkpoint or "training", unit="epoch",
               disable=(not progress) or is_ci(), leave=True)
    for epoch in bar:
        ep = train_one_epoch(model, train_batches, loss_fn, opt, device=device, forward=forward,
                             metrics=metrics, scheduler=sched, scaler=scaler, clip_grad=clip_grad)
        row = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in ep.items() if k != "n"},
               "time": time.perf_counter() - start}
        if val is not None:
            ev = evaluate(model, val, loss_fn=loss_fn, metrics=metrics, forward=forward, device=device)
            row.update({f"val_{k}": v for k, v in ev.items() if k != "n"})
        hist.rows.append(row)
        shown = [k for k in ("train_loss", "val_loss", *(f"val_{m}" for m in metrics)) if k in row]
        bar.set_postfix({k: f"{row[k]:.4f}" for k in shown[-2:]})
    hist.seconds = time.perf_counter() - start
    model.eval()
    if path is not None:
        save_checkpoint(path, model, hist)
    return hist


def save_checkpoint(path: str, model: nn.Module, hist: History) -> None:
    """Write ``model``'s weights (on the CPU) and its History to ``path``, atomically."""
    with atomic_path(path) as tmp:
        torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "history": hist.to_dict()}, tmp)
