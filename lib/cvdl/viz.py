"""Looking inside a CNN (notebook 04): features, neighbours, heat-maps, gradients, preferred inputs.

- :func:`recording`, :func:`layer_output` — layers' outputs taken with forward hooks (the hooks
  themselves, and any layer's output for a batch of images);
- :func:`eval_mode` — a model in eval mode for the length of a ``with`` block, its modes restored;
- :func:`nearest_neighbours`, :func:`label_agreement` — L2 neighbours in pixel or feature space;
- :func:`occlusion_map` — Zeiler & Fergus (2014): slide a patch over the image, record how much
  the class score drops at each position;
- :func:`saliency`, :func:`saliency_map` — Simonyan et al. (2014): the gradient of the class score
  with respect to the pixels, and its per-pixel maximum over channels;
- :class:`GuidedReLUFunction`, :func:`guided_relus`, :func:`guided_backprop` — Springenberg et al.
  (2015): backpropagate only positive gradients through ReLUs whose input was positive (and
  :class:`GuidedReLU6Function` for the ReLU6 of MobileNet-v2 and EfficientNet-Lite);
- :func:`class_model` — Simonyan et al. (2014): ``argmax_I S_c(I) − λ‖I‖²`` by gradient ascent
  from a zero image;
- :func:`top_activations`, :func:`crop_receptive_fields`, :func:`max_activating_patches` — the
  dataset patches that excite one unit most (Girshick et al. 2014; Zeiler & Fergus 2014);
- :func:`auc` — the area under the ROC curve of many units at once: how well a unit's activation
  separates one class from the rest (a "detector" score, Zhou et al. 2015 in spirit).

Images are float tensors ``[N, C, H, W]``; models map them to class scores ``[N, K]`` (logits).

>>> feats = layer_output(model, model[9], x, flatten=True)  # [N, D]: layer 9's output per image
>>> grads = saliency(model, x[:8], target=y[:8])           # [8, C, H, W]
>>> heat = occlusion_map(model, x[:1], y[:1], patch=8, stride=2)   # [1, nH, nW]
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Hashable, Iterator, Mapping, NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks

# ----------------------------------------------------------------------------------------------
# Checks shared by the functions below
# ----------------------------------------------------------------------------------------------


def _targets(target, n: int, device) -> torch.Tensor:
    """An int or ``[N]`` integer tensor → int64 ``[N]`` on ``device``."""
    if isinstance(target, int) and not isinstance(target, bool):
        return torch.full((n,), target, dtype=torch.long, device=device)
    if isinstance(target, torch.Tensor) and target.ndim == 1 and len(target) == n and \
            not target.dtype.is_floating_point and target.dtype != torch.bool:
        return target.to(device=device, dtype=torch.long)
    raise ValueError(f"target must be an int or an integer tensor [N] = [{n}], got "
                     f"{tuple(target.shape) if isinstance(target, torch.Tensor) else target!r}")


def _check_scores(scores: torch.Tensor, target: torch.Tensor) -> None:
    if scores.ndim != 2:
        raise ValueError(f"the model must return class scores [N, K], got shape {tuple(scores.shape)}")
    if target.numel() and (target.min() < 0 or target.max() >= scores.shape[1]):
        raise ValueError(f"target must lie in 0..{scores.shape[1] - 1}, got values in "
                         f"{target.min().item()}..{target.max().item()}")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode within the ``with`` block; every sub-module's own mode is restored
    on exit. Eval mode makes BatchNorm use (and not update) its running statistics and turns
    Dropout off, so a model that is only *looked at* or *attacked* is left as it was."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


# ----------------------------------------------------------------------------------------------
# Features through forward hooks
# ----------------------------------------------------------------------------------------------


class StopForward(Exception):
    """Raised by :func:`recording`'s hooks (``stop=True``) once every layer has produced its
    output: the rest of the forward pass is skipped; the ``with`` block swallows it."""


@contextmanager
def recording(layers: Mapping[Hashable, nn.Module], *, stop: bool = False,
              keep: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Iterator[dict[Hashable, list]]:
    """Forward hooks on ``layers`` (``{key: module}``) for the length of a ``with`` block.

    Yields ``{key: []}``; every time a module runs, ``keep(output)`` (the output itself by
    default) is appended to its list. With ``stop``, the forward pass that completes the set (every
    key has an output) is cut short by :class:`StopForward`, which the ``with`` statement
    swallows: asking for a shallow layer of a deep network costs only the shallow part. The
    hooks are removed on exit, also after an error.

    >>> with recording({"fc1": model[8]}) as out:
    ...     model(x)
    >>> out["fc1"][0]                                   # Tensor[N, 128]
    """
    record: dict[Hashable, list] = {key: [] for key in layers}

    def hook_for(key):
        def hook(_module, _inputs, output):
            record[key].append(output if keep is None else keep(output))
            if stop and all(record.values()):
                raise StopForward
        return hook

    handles = [module.register_forward_hook(hook_for(key)) for key, module in layers.items()]
    try:
        yield record
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()


def layer_output(model: nn.Module, layer: nn.Module | str, x: torch.Tensor, batch_size: int = 512,
                 flatten: bool = False) -> torch.Tensor:
    """The output of ``layer`` (a sub-module of ``model``, or its dotted name) for images ``x``.

    A forward hook (:func:`recording`) stores what ``layer`` returns while ``model`` runs in eval
    mode without gradients, in batches of ``batch_size``; the hook is removed and the model's
    mode restored afterwards. ``x`` is moved to the model's device and dtype batch by batch.

    Args:
        x (Tensor[N, C, H, W]): input images.
        flatten: return ``[N, D]`` (each output flattened) instead of the layer's own shape.

    Returns:
        Tensor[N, ...] on the CPU, in the model's dtype (float64 for a float64 model): the
        layer's output for every image (``[N, D]`` if ``flatten``).
    """
    _checks.images(x)
    if isinstance(layer, str):
        try:
            layer = model.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n][:12]
            raise ValueError(f"model has no sub-module {layer!r}; e.g. {names}") from None
    if not any(m is layer for m in model.modules()):
        raise ValueError(f"layer {type(layer).__name__} is not a sub-module of the model")
    _checks.positive_int(batch_size=batch_size)
    device, dtype = _checks.model_device(model), _checks.model_dtype(model)
    with eval_mode(model), torch.no_grad(), recording({0: layer}, keep=lambda out: out.detach().cpu()) as rec:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size].to(device=device, dtype=dtype))
    caught = rec[0]
    if len(caught) != (len(x) + batch_size - 1) // batch_size:
        raise ValueError(f"layer {type(layer).__name__} ran {len(caught)} times for "
                         f"{(len(x) + batch_size - 1) // batch_size} batches; hook a layer used exactly once")
    out = torch.cat(caught) if caught else torch.empty(0, dtype=dtype)
    return out.flatten(1) if flatten else out


# ----------------------------------------------------------------------------------------------
# Nearest neighbours
# ----------------------------------------------------------------------------------------------


def nearest_neighbours(queries: torch.Tensor, database: torch.Tensor, k: int = 5,
                       exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` database rows closest to each query in Euclidean (L2) distance.

    Args:
        queries (Tensor[Q, D]), database (Tensor[N, D]): vectors (flatten images first).
        exclude_self: the queries are the database itself; a row is not its own neighbour.

    Returns:
        ``(distances, indices)``, both ``[Q, k]``, nearest first.
    """
    if not isinstance(queries, torch.Tensor) or not isinstance(database, torch.Tensor) or \
            queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError("queries and database must be tensors [Q, D] and [N, D] with the same D, got "
                         f"{getattr(queries, 'shape', type(queries).__name__)} and "
                         f"{getattr(database, 'shape', type(database).__name__)}")
    if exclude_self and queries.shape[0] != database.shape[0]:
        raise ValueError(f"exclude_self needs queries to be the database, got {queries.shape[0]} "
                         f"queries and {database.shape[0]} database rows")
    available = database.shape[0] - int(exclude_self)
    if not isinstance(k, int) or not 1 <= k <= available:
        raise ValueError(f"k must be an integer in 1..{available} (the database size), got {k!r}")
    q, db = queries.double(), database.double()
    # ‖q − d‖² = ‖q‖² − 2 q·d + ‖d‖², computed in float64 so that close pairs are not lost
    d2 = (q * q).sum(1, keepdim=True) - 2 * q @ db.T + (db * db).sum(1)  # [Q, N]
    d2 = d2.clamp_min(0)
    if exclude_self:
        d2.fill_diagonal_(float("inf"))
    dist, idx = d2.topk(k, dim=1, largest=False)  # [Q, k], sorted nearest first
    return dist.sqrt().to(queries.dtype), idx


def label_agreement(neighbour_labels: torch.Tensor, query_labels: torch.Tensor) -> float:
    """Fraction of neighbours that share their query's label.

    ``neighbour_labels`` (Tensor[Q, k]) — e.g. ``labels[indices]``; ``query_labels`` (Tensor[Q]).
    """
    if neighbour_labels.ndim != 2 or query_labels.shape != neighbour_labels.shape[:1]:
        raise ValueError(f"expected neighbour labels [Q, k] and query labels [Q], got "
                         f"{tuple(neighbour_labels.shape)} and {tuple(query_labels.shape)}")
    if neighbour_labels.numel() == 0:
        raise ValueError("label agreement of zero neighbours is undefined")
    return (neighbour_labels == query_labels[:, None]).double().mean().item()


# ----------------------------------------------------------------------------------------------
# Occlusion
# ----------------------------------------------------------------------------------------------


def occlusion_positions(size: int, patch: int, stride: int) -> int:
    """Number of patch positions along one axis of ``size`` pixels: ``(size − patch) // stride + 1``."""
    if not isinstance(patch, int) or not 1 <= patch <= size:
        raise ValueError(f"patch must be an integer in 1..{size} (the image side), got {patch!r}")
    _checks.positive_int(stride=stride)
    return (size - patch) // stride + 1


@torch.no_grad()
def occlusion_map(model: nn.Module, x: torch.Tensor, target: int | torch.Tensor, patch: int = 8,
                  stride: int = 4, value: float = 0.0, score: str = "prob",
                  batch_size: int = 256) -> torch.Tensor:
    """How much the target class's score drops when a ``patch × patch`` square is occluded.

    Position ``(i, j)`` covers rows ``i·stride … i·stride + patch − 1`` and columns
    ``j·stride … j·stride + patch − 1``, all channels, set to ``value``. Positions that would run
    past the border are not used (see :func:`occlusion_positions`).

    Args:
        x (Tensor[N, C, H, W]): images.
        target: the class whose score is watched: an int, or int64 ``Tensor[N]``.
        score: ``"prob"`` (softmax probability, as in Zeiler & Fergus) or ``"logit"``.

    The model runs in eval mode (its mode is restored afterwards); ``x`` is moved to its device
    and dtype.

    Returns:
        Tensor[N, nH, nW] on the CPU, in the model's dtype: ``score(x) − score(x occluded at
        (i, j))`` — large where hiding the square hurts the class most.
    """
    _checks.images(x)
    if score not in ("prob", "logit"):
        raise ValueError(f"score must be 'prob' or 'logit', got {score!r}")
    _checks.positive_int(batch_size=batch_size)
    n, c, h, w = x.shape
    nh, nw = occlusion_positions(h, patch, stride), occlusion_positions(w, patch, stride)
    device, dtype = _checks.model_device(model), _checks.model_dtype(model)
    t = _targets(target, n, device)

    def class_score(batch: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        out = model(batch)
        _check_scores(out, cls)
        out = out.softmax(1) if score == "prob" else out
        return out.gather(1, cls[:, None])[:, 0]

    # one mask per position: [P, 1, H, W], 1 inside the occluded square
    masks = torch.zeros(nh * nw, 1, h, w, device=device, dtype=dtype)
    for p in range(nh * nw):
        i, j = divmod(p, nw)
        masks[p, :, i * stride:i * stride + patch, j * stride:j * stride + patch] = 1
    x = x.to(device=device, dtype=dtype)
    drops = torch.empty(n, nh * nw, dtype=dtype)
    with eval_mode(model):
        base = class_score(x, t)  # [N]
        for k in range(n):
            img = x[k:k + 1]  # [1, C, H, W]
            for s in range(0, nh * nw, batch_size):
                m = masks[s:s + batch_size]  # [P', 1, H, W]
                occluded = img * (1 - m) + value * m  # [P', C, H, W]
                drops[k, s:s + len(m)] = (base[k] - class_score(occluded, t[k].expand(len(m)))).cpu()
    return drops.view(n, nh, nw)


# ----------------------------------------------------------------------------------------------
# Gradients: saliency and guided backprop
# ----------------------------------------------------------------------------------------------


def saliency(model: nn.Module, x: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
    """The gradient of the class score ``S_c`` (logit, before the softmax) w.r.t. the input pixels.

    Simonyan et al. (2014): ``w = ∂S_c/∂I`` at the image ``I``; to first order
    ``S_c(I') ≈ S_c(I) + wᵀ(I' − I)``, so large ``|w|`` marks the pixels the score is most
    sensitive to. The model runs in eval mode (its mode is restored afterwards); its parameters'
    gradients are left untouched.

    Args:
        x (Tensor[N, C, H, W]): images; target: an int or int64 ``Tensor[N]``.

    Returns:
        Tensor[N, C, H, W]: ``∂S_target/∂x`` for every image (on ``x``'s device).
    """
    _checks.images(x)
    inp = x.detach().to(_checks.model_device(model)).requires_grad_(True)
    with eval_mode(model), torch.enable_grad():  # works inside a torch.no_grad() block too
        scores = model(inp)
        t = _targets(target, len(x), inp.device)
        _check_scores(scores, t)
        # images do not interact in eval mode, so the gradient of the sum is each image's own gradient
        (grad,) = torch.autograd.grad(scores.gather(1, t[:, None]).sum(), inp)
    return grad.to(x.device)


def saliency_map(grad: torch.Tensor) -> torch.Tensor:
    """Simonyan et al.'s image-specific saliency: ``M_ij = max_c |w_{c,i,j}|``.

    ``grad`` (Tensor[N, C, H, W]) from :func:`saliency` or :func:`guided_backprop` → Tensor[N, H, W].
    """
    _checks.images(grad, "grad")
    return grad.abs().amax(dim=1)


class GuidedReLUFunction(torch.autograd.Function):
    """ReLU forward; guided backward (Springenberg et al. 2015, eq. for "guided backpropagation").

    Forward ``y = max(x, 0)``. Backward: ``∂x = g · [x > 0] · [g > 0]`` — the usual ReLU rule
    (pass the gradient where the input was positive) combined with the "deconvnet" rule (pass
    only positive gradients).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.where((x > 0) & (grad > 0), grad, torch.zeros_like(grad))


class GuidedReLU(nn.Module):
    """An ``nn.ReLU`` whose backward pass is :class:`GuidedReLUFunction`'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GuidedReLUFunction.apply(x)


class GuidedReLU6Function(torch.autograd.Function):
    """ReLU6 forward, ``y = min(max(x, 0), 6)`` (MobileNet-v2's and EfficientNet-Lite's
    activation); guided backward ``∂x = g · [0 < x < 6] · [g > 0]`` — the ReLU6's own rule (pass
    the gradient where the output was not clipped) combined with the "deconvnet" rule.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.where((x > 0) & (x < 6) & (grad > 0), grad, torch.zeros_like(grad))


class GuidedReLU6(nn.Module):
    """An ``nn.ReLU6`` whose backward pass is :class:`GuidedReLU6Function`'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GuidedReLU6Function.apply(x)


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[int]:
    """Within the ``with`` block, every ``nn.ReLU`` sub-module of ``model`` is a :class:`GuidedReLU`
    and every ``nn.ReLU6`` (MobileNet-v2, EfficientNet-Lite) a :class:`GuidedReLU6`.

    Yields the number of activations replaced; the originals are put back on exit. ReLUs applied
    as functions (``F.relu`` inside a ``forward``) cannot be seen and are not replaced, so a model
    without ``nn.ReLU`` / ``nn.ReLU6`` modules raises ``ValueError``.
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, (nn.ReLU, nn.ReLU6)):
                swapped.append((parent, name, child))
    if not swapped:
        raise ValueError("guided backprop needs nn.ReLU (or nn.ReLU6) modules; the model has none "
                         "(ReLUs called as F.relu cannot be replaced)")
    guided, guided6 = GuidedReLU(), GuidedReLU6()
    try:
        for parent, name, child in swapped:
            setattr(parent, name, guided6 if isinstance(child, nn.ReLU6) else guided)
        yield len(swapped)
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def guided_backprop(model: nn.Module, x: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
    """Guided backpropagation of the class score ``S_c`` to the pixels (Springenberg et al. 2015).

    Same as :func:`saliency`, but every ReLU passes back only positive gradients, and only where
    its input was positive (:class:`GuidedReLUFunction`; ReLU6: :class:`GuidedReLU6Function`).

    Args:
        x (Tensor[N, C, H, W]): images; target: an int or int64 ``Tensor[N]``.

    Returns:
        Tensor[N, C, H, W]: the guided gradient of ``S_target`` w.r.t. ``x``.
    """
    with guided_relus(model):
        return saliency(model, x, target)


# ----------------------------------------------------------------------------------------------
# Class-model visualisation
# ----------------------------------------------------------------------------------------------


class ClassModel(NamedTuple):
    """What :func:`class_model` found.

    images (Tensor[T, C, H, W]): the optimised image for each target class.
    objective (Tensor[steps + 1, T]): ``S_c(I) − λ‖I‖²`` before each step and at the end.
    scores (Tensor[steps + 1, T]): ``S_c(I)`` alone, at the same moments.
    """

    images: torch.Tensor
    objective: torch.Tensor
    scores: torch.Tensor


def class_model(model: nn.Module, targets: Sequence[int] | torch.Tensor, shape: Sequence[int],
                steps: int = 200, lr: float = 0.1, l2: float = 0.01,
                init: torch.Tensor | None = None) -> ClassModel:
    """Simonyan et al. (2014): ``I* = argmax_I S_c(I) − λ‖I‖²₂`` by gradient ascent from zeros.

    Each step is ``I ← I + lr · ∇_I (S_c(I) − λ‖I‖²)`` (plain gradient ascent; every target class
    has its own image, optimised together in one batch). ``S_c`` is the class score before the
    softmax: maximising the probability instead could be done by lowering the other classes.
    The model runs in eval mode (its mode is restored afterwards).

    Args:
        targets: class indices ``c`` (length T).
        shape: ``(C, H, W)`` of one image.
        l2: ``λ``; init (Tensor[T, C, H, W]): a start other than the zero image.

    Returns:
        a :class:`ClassModel` (images ``[T, C, H, W]``, objective and scores ``[steps + 1, T]``).
    """
    t = torch.as_tensor(targets, dtype=torch.long).flatten()
    if t.numel() == 0:
        raise ValueError("targets must name at least one class")
    if len(shape) != 3 or any(int(s) <= 0 for s in shape):
        raise ValueError(f"shape must be (C, H, W) with positive sizes, got {tuple(shape)}")
    _checks.non_negative_int(steps=steps)
    _checks.positive(lr=lr)
    _checks.non_negative(l2=l2)
    device, dtype = _checks.model_device(model), _checks.model_dtype(model)
    img = (torch.zeros(len(t), *shape, device=device, dtype=dtype) if init is None
           else init.detach().clone().to(device=device, dtype=dtype))
    if img.shape != (len(t), *shape):
        raise ValueError(f"init must have shape {(len(t), *shape)}, got {tuple(img.shape)}")
    t = t.to(device)
    objective, scores = [], []
    for step in range(steps + 1):
        img.requires_grad_(True)
        with eval_mode(model), torch.enable_grad():
            out = model(img)
            _check_scores(out, t)
            s = out.gather(1, t[:, None])[:, 0]  # [T]
            obj = s - l2 * img.pow(2).flatten(1).sum(1)  # [T]
            objective.append(obj.detach().cpu())
            scores.append(s.detach().cpu())
            if step == steps:
                break
            # each image's objective depends on that image only: the gradient of the sum is theirs
            (g,) = torch.autograd.grad(obj.sum(), img)
        img = (img + lr * g).detach()
    return ClassModel(img.detach().cpu(), torch.stack(objective), torch.stack(scores))


# ----------------------------------------------------------------------------------------------
# Maximally activating patches
# ----------------------------------------------------------------------------------------------


def top_activations(activations: torch.Tensor, unit: int, k: int = 9) -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor, torch.Tensor]:
    """The ``k`` images where channel ``unit`` reaches its highest value, and where.

    Each image counts once (its maximum over positions), so the result shows ``k`` different images.

    Args:
        activations (Tensor[N, U, h, w]): a conv layer's output for N images.

    Returns:
        ``(values, n, i, j)``, each ``[k]``, highest first: the activation, the image index, and the
        position (row, column) in the feature map.
    """
    if not isinstance(activations, torch.Tensor) or activations.ndim != 4:
        raise ValueError(f"activations must be a tensor [N, U, h, w], got "
                         f"{getattr(activations, 'shape', type(activations).__name__)}")
    n_img, units, h, w = activations.shape
    if not isinstance(unit, int) or not 0 <= unit < units:
        raise ValueError(f"unit must be an integer in 0..{units - 1}, got {unit!r}")
    if not isinstance(k, int) or not 1 <= k <= n_img:
        raise ValueError(f"k must be an integer in 1..{n_img} (the number of images), got {k!r}")
    per_image, where = activations[:, unit].flatten(1).max(1)  # [N], [N] flat position
    values, n = per_image.topk(k)
    pos = where[n]
    return values, n, pos // w, pos % w


def crop_receptive_fields(images: torch.Tensor, n: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                          size: int, jump: int, start: float) -> torch.Tensor:
    """The input window each feature-map position ``(i, j)`` of image ``n`` sees.

    The window of output position ``u`` along an axis is
    ``[start + u·jump − (size − 1)/2, start + u·jump + (size − 1)/2]`` (``size``, ``jump`` and
    ``start`` as in :func:`cvdl.arith.receptive_field_trace`); parts outside the image (padding)
    are filled with zeros.

    Args:
        images (Tensor[N, C, H, W]); n, i, j (Tensor[K]): image index, row, column.

    Returns:
        Tensor[K, C, size, size]: the crops.
    """
    _checks.images(images, "images")
    if not (n.shape == i.shape == j.shape) or n.ndim != 1:
        raise ValueError(f"n, i and j must be tensors [K] of one length, got {tuple(n.shape)}, "
                         f"{tuple(i.shape)}, {tuple(j.shape)}")
    _checks.positive_int(size=size, jump=jump)
    offset = start - (size - 1) / 2
    if offset != int(offset):
        raise ValueError(f"the window start {offset} is not a whole pixel; check size/start")
    _, c, h, w = images.shape
    pad = size  # enough zeros around the image for any window that pokes out
    padded = F.pad(images, (pad, pad, pad, pad))  # [N, C, H + 2·size, W + 2·size]
    crops = torch.empty(len(n), c, size, size, dtype=images.dtype)
    for q in range(len(n)):
        r0 = int(offset + int(i[q]) * jump) + pad
        c0 = int(offset + int(j[q]) * jump) + pad
        if not (0 <= r0 and r0 + size <= h + 2 * pad and 0 <= c0 and c0 + size <= w + 2 * pad):
            raise ValueError(f"position ({int(i[q])}, {int(j[q])}) is outside the image")
        crops[q] = padded[int(n[q]), :, r0:r0 + size, c0:c0 + size]
    return crops


def max_activating_patches(activations: torch.Tensor, images: torch.Tensor, units: Sequence[int],
                           size: int, jump: int, start: float, k: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """For each unit, the ``k`` receptive-field crops (of different images) that excite it most.

    Args:
        activations (Tensor[N, U, h, w]): the layer's output for ``images`` (e.g. :func:`layer_output`).
        images (Tensor[N, C, H, W]): the images; size, jump, start: the layer's receptive field.

    Returns:
        ``(patches, values)``: Tensor[len(units), k, C, size, size] and Tensor[len(units), k].
    """
    if activations.ndim != 4 or images.ndim != 4 or len(activations) != len(images):
        raise ValueError(f"activations [N, U, h, w] and images [N, C, H, W] must have the same N, got "
                         f"{tuple(activations.shape)} and {tuple(images.shape)}")
    patches, values = [], []
    for u in units:
        v, n, i, j = top_activations(activations, int(u), k)
        patches.append(crop_receptive_fields(images, n, i, j, size, jump, start))
        values.append(v)
    return torch.stack(patches), torch.stack(values)


# ----------------------------------------------------------------------------------------------
# Units as detectors
# ----------------------------------------------------------------------------------------------


def auc(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve for each column of ``scores`` (many units at once).

    AUC = P(score of a random positive > score of a random negative) + ½ P(tie) (the
    Mann–Whitney statistic): 1 — the unit fires more for every positive than for any negative;
    0.5 — no better than chance. Computed by ``sklearn.metrics.roc_auc_score``, one column at a time.

    Args:
        scores (Tensor[N] or Tensor[N, U]): e.g. each unit's activation (max over positions).
        positive (Tensor[N], bool): which images belong to the class.

    Returns:
        Tensor[U] (or a 0-d tensor for 1-d ``scores``), float64, on the CPU.
    """
    from sklearn.metrics import roc_auc_score  # imported here: scikit-learn takes a second to import

    if not isinstance(scores, torch.Tensor) or scores.ndim not in (1, 2):
        raise ValueError(f"scores must be a tensor [N] or [N, U], got "
                         f"{getattr(scores, 'shape', type(scores).__name__)}")
    if not isinstance(positive, torch.Tensor) or positive.dtype != torch.bool or \
            positive.shape != scores.shape[:1]:
        raise ValueError(f"positive must be a bool tensor [N] = [{scores.shape[0]}], got "
                         f"{getattr(positive, 'dtype', type(positive).__name__)} "
                         f"{tuple(getattr(positive, 'shape', ()))}")
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs positives and negatives, got {n_pos} positives and {n_neg} negatives")
    s = scores.detach().double().cpu()
    s2 = (s[:, None] if s.ndim == 1 else s).numpy()  # [N, U]
    y = positive.cpu().numpy()
    out = torch.tensor([roc_auc_score(y, s2[:, u]) for u in range(s2.shape[1])], dtype=torch.float64)
    return out[0] if s.ndim == 1 else out
