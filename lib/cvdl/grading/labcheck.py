"""Lab checks: one declaration per graded part, read by three consumers.

A lab's test cell declares what it checks instead of hand-writing asserts::

    from cvdl.grading.labcheck import check, Case, rand
    check(conv2d, [Case(rand(1, 1, 5, 5, seed=0), rand(1, 1, 3, 3, seed=1))],
          ref=refs.conv2d, atol=1e-5)
    ### BEGIN HIDDEN TESTS
    check(conv2d, [Case(rand(2, 3, 9, 9, seed=7), rand(4, 3, 3, 3, seed=8), stride=2)],
          ref=refs.conv2d)
    ### END HIDDEN TESTS

The same declaration is used three ways, so the student's tests, nbgrader's tests and the
grader's verdict cannot drift apart:

- **assert** (the default: a student's kernel, or nbgrader's autograde): call the function on
  every case, compare with the reference, raise ``AssertionError`` with a readable message;
- **record** (``cvdl grade``, on the instructor's side, running the *solution*): store each
  case's inputs and the reference's outputs as plain files (the grading key);
- **harness** (``cvdl grade``, inside the sandbox): :func:`run_part` loads the inputs, calls the
  *student's* function and writes its raw outputs to plain files. The verdict is computed later,
  outside the sandbox, by :func:`compare` on values read back with ``allow_pickle=False`` — so a
  submission that overwrites builtins or monkeypatches numpy, torch or this module changes only
  its own outputs, never the comparison.

Values crossing the boundary are *normalised* into a small tree (``("ndarray", array)``,
``("tensor", array, dtype)``, ``("int", 3)``, ``("list", [...])``, ``("error", [type names],
message)``, ...); :func:`compare` works on those trees.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .._io import atomic_write_text

__all__ = ["check", "Case", "rand", "randint", "Fixture", "Probe", "compare", "refs"]

# Set by cvdl.labrun while it executes a notebook for the grader; None in a student's kernel.
_CONTEXT: dict | None = None

MAX_NODES = 10_000  # a returned value with more leaves than this is not graded
MAX_DEPTH = 32      # ... or nested deeper than this


# ----------------------------------------------------------------------------------------------
# Inputs: specifications that materialise into fresh values for every call
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rand:
    """A seeded random array: uniform in [low, high) (floats) or integers in [low, high)."""

    shape: tuple
    seed: int
    dtype: str = "float32"
    low: float = -1.0
    high: float = 1.0
    torch: bool = False

    def make(self):
        g = np.random.default_rng(self.seed)
        if np.dtype(self.dtype).kind in "iu":
            a = g.integers(int(self.low), int(self.high), size=self.shape).astype(self.dtype)
        else:
            a = g.uniform(self.low, self.high, size=self.shape).astype(self.dtype)
        if self.torch:
            import torch
            return torch.from_numpy(a)
        return a


def rand(*shape: int, seed: int, dtype: str = "float32", low: float = -1.0, high: float = 1.0,
         torch: bool = False) -> Rand:
    """A seeded uniform random numpy array (``torch=True``: a tensor) of the given shape."""
    return Rand(tuple(int(s) for s in shape), int(seed), dtype, low, high, torch)


def randint(*shape: int, low: int, high: int, seed: int, torch: bool = False) -> Rand:
    """Seeded random int64 integers in ``[low, high)``."""
    return Rand(tuple(int(s) for s in shape), int(seed), "int64", low, high, torch)


def _set_named(obj, kind: str, registry: dict, name: str, params: dict) -> None:
    """Fill a frozen ``(name, params)`` declaration, checking ``name`` against its registry."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; known: {sorted(registry)}")
    object.__setattr__(obj, "name", name)
    object.__setattr__(obj, "params", tuple(sorted(params.items())))


@dataclass(frozen=True)
class Fixture:
    """An object built by a registered factory (e.g. a small seeded model): ``Fixture("mlp", ...)``."""

    name: str
    params: tuple = ()

    def __init__(self, name: str, **params):
        _set_named(self, "fixture", FIXTURES, name, params)

    def make(self):
        return FIXTURES[self.name](**dict(self.params))


def _fixture_linear(in_features: int, out_features: int, seed: int):
    import torch
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_features, out_features))


def _fixture_small_cnn(seed: int, n_classes: int = 10, frozen: bool = False):
    """conv(1→4, 3×3) → ReLU → pool → linear, for 8×8 inputs; ``frozen``: the conv is frozen."""
    import torch
    from torch import nn
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, n_classes))
    if frozen:
        model[0].requires_grad_(False)
    return model


def _fixture_sgd_pair(seed: int, lr: float = 0.1, in_features: int = 64, out_features: int = 10,
                      stale_grad: bool = False):
    """(model, optimizer): a seeded linear classifier and plain SGD on its parameters.
    ``stale_grad``: the parameters carry gradients from an earlier step (zero them first!)."""
    import torch
    model = _fixture_linear(in_features, out_features, seed)
    if stale_grad:
        for p in model.parameters():
            p.grad = torch.ones_like(p)
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def _fixture_char_lm_pair(seed: int, vocab: int = 12, hidden: int = 16, lr: float = 0.1,
                          stale_grad: bool = False):
    """(model, optimizer): a seeded ``cvdl.seq.TokenLM`` (``ids [N, T]`` → ``(scores [N, T, V], state)``)
    and plain SGD. ``stale_grad``: the parameters carry gradients from an earlier step."""
    import torch
    from ..seq import TokenLM
    torch.manual_seed(seed)
    model = TokenLM(vocab, hidden=hidden)
    if stale_grad:
        for p in model.parameters():
            p.grad = torch.ones_like(p)
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def _fixture_captioner(seed: int, vocab: int = 6, features: int = 3, hidden: int = 8, scale: float = 3.0,
                       never_end: bool = False, eos: int = 1):
    """A seeded ``cvdl.caption.ShowAndTell`` in eval mode on features ``[N, features, 1, 1]``, its
    weights scaled by ``scale`` (peakier, more varied next-word distributions than at
    initialisation). ``never_end``: the id ``eos`` gets a score of −10⁴ — a beam that never ends."""
    import torch
    from ..caption import ShowAndTell
    torch.manual_seed(seed)
    model = ShowAndTell((features, 1, 1), vocab, embed=4, hidden=hidden).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
        if never_end:
            model.out.bias[eos] = -1e4
    return model


def _fixture_dann_pair(seed: int, lr: float = 0.1, stale_grad: bool = False):
    """(model, optimizer): a tiny DANN on 6 inputs — features Linear(6, 5) + ReLU, label predictor
    Linear(5, 3), domain classifier Linear(5, 1) behind ``cvdl.transfer.grad_reverse`` —
    ``model(x, lambd)`` → ``(scores [N, 3], domain logits [N])``; plain SGD on all of it."""
    import torch
    from torch import nn
    from ..transfer import grad_reverse

    class TinyDANN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
            self.label, self.domain = nn.Linear(5, 3), nn.Linear(5, 1)

        def forward(self, x, lambd=0.0):
            f = self.features(x)
            return self.label(f), self.domain(grad_reverse(f, lambd))[:, 0]

    torch.manual_seed(seed)
    model = TinyDANN()
    if stale_grad:
        for p in model.parameters():
            p.grad = torch.ones_like(p)
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def _fixture_baseline_cnn(seed: int, c1: int = 4, c2: int = 6, hidden: int = 8, num_classes: int = 3):
    """A seeded ``cvdl.models.BaselineCNN`` (random weights, eval mode)."""
    import torch
    from ..models import BaselineCNN
    torch.manual_seed(seed)
    return BaselineCNN(c1=c1, c2=c2, hidden=hidden, num_classes=num_classes).eval()


def _fixture_up_parts(seed: int, c_in: int, c_out: int):
    """(up, conv): a seeded ``ConvTranspose2d(c_in, c_out, 2, stride=2)`` and a
    ``cvdl.segment.DoubleConv(2 · c_out, c_out)`` in eval mode with random running statistics —
    the two layers of one U-Net decoder level."""
    import torch
    from torch import nn
    from ..segment import DoubleConv
    torch.manual_seed(seed)
    up, conv = nn.ConvTranspose2d(c_in, c_out, 2, stride=2), DoubleConv(2 * c_out, c_out)
    with torch.no_grad():
        for m in conv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return up, conv.eval()


def _fixture_clip_parts(seed: int, channels: int = 1, features: int = 6, classes: int = 3, head_in: int = 1,
                        hidden: int | None = None):
    """The parts of a clip classifier, seeded, in eval mode: a small per-frame ``tower`` (conv 3×3
    to 4 channels, ReLU, average-pooled to 2×2, linear to ``features``) and a linear ``head`` from
    ``head_in · features`` (or, with ``hidden``, from an ``nn.LSTM(features, hidden,
    batch_first=True)`` placed between them) to ``classes`` → ``(tower, head)`` or
    ``(tower, lstm, head)``."""
    import torch
    from torch import nn
    torch.manual_seed(seed)
    tower = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, features)).eval()
    if hidden is None:
        return tower, nn.Linear(head_in * features, classes).eval()
    return tower, nn.LSTM(features, hidden, batch_first=True).eval(), nn.Linear(hidden, classes).eval()


FIXTURES: dict[str, Callable] = {"linear": _fixture_linear, "small_cnn": _fixture_small_cnn,
                                 "sgd_pair": _fixture_sgd_pair, "char_lm_pair": _fixture_char_lm_pair,
                                 "captioner": _fixture_captioner, "dann_pair": _fixture_dann_pair,
                                 "baseline_cnn": _fixture_baseline_cnn, "up_parts": _fixture_up_parts,
                                 "clip_parts": _fixture_clip_parts}


@dataclass
class Case:
    """One call: ``Case(*args, **kwargs)``; ``Case(..., expect=value)`` gives the answer instead of
    a reference function; ``Case(..., raises=ValueError)`` demands that exception."""

    args: tuple
    kwargs: dict
    expect: Any = None
    raises: type | None = None
    has_expect: bool = False

    def __init__(self, *args, expect: Any = ..., raises: type | None = None, **kwargs):
        self.args, self.kwargs, self.raises = args, kwargs, raises
        self.has_expect = expect is not ...
        self.expect = None if expect is ... else expect

    def materialise(self) -> tuple[list, dict]:
        """Fresh argument values (a function may modify its inputs). A fixture that builds a
        tuple is unpacked where it stands: ``Fixture("sgd_pair")`` becomes two arguments (model,
        optimiser), ``Fixture("up_parts", ...)`` after two tensors the third and fourth."""
        args: list = []
        for a in self.args:
            v = _make(a)
            if isinstance(a, Fixture) and isinstance(v, tuple):
                args.extend(v)
            else:
                args.append(v)
        return args, {k: _make(v) for k, v in self.kwargs.items()}


def _make(spec):
    if isinstance(spec, (Rand, Fixture)):
        return spec.make()
    if isinstance(spec, np.ndarray):
        return spec.copy()
    if isinstance(spec, list):
        return [_make(s) for s in spec]
    if isinstance(spec, tuple):
        return tuple(_make(s) for s in spec)
    if type(spec).__module__.startswith("torch") and hasattr(spec, "clone"):
        return spec.clone()
    return spec


# ----------------------------------------------------------------------------------------------
# Probes: turn a result that is not plain data (a model, a mutated argument) into plain data
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """``Probe("module", input_shape=(2, 1, 8, 8))``: what to observe of a call's result."""

    name: str
    params: tuple = ()

    def __init__(self, name: str, **params):
        _set_named(self, "probe", PROBES, name, params)

    def __call__(self, result, args, kwargs):
        return PROBES[self.name](result, args, kwargs, **dict(self.params))


def _probe_module(result, args, kwargs, input_shape):
    """A model: its class-name sequence of leaf layers, parameter count and output shape."""
    import torch
    if not isinstance(result, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(result).__name__}")
    leaves = [type(m).__name__ for m in result.modules() if not list(m.children())]
    n_params = sum(int(p.numel()) for p in result.parameters())
    with torch.no_grad():
        out = result(torch.zeros(*input_shape))
    return {"layers": leaves, "n_params": n_params, "out_shape": list(out.shape)}


def _probe_step(result, args, kwargs, params: bool = True):
    """A training step: the returned loss and (``params=True``) the model's new parameters."""
    if not params:
        return {"loss": result}
    return {"loss": result, "params": [p.detach().clone() for p in args[0].parameters()]}


def _probe_apply(result, args, kwargs, input_shape, seed: int = 0):
    """A model: its output (no gradient) on a seeded random input of ``input_shape`` in [0, 1)."""
    import torch
    if not isinstance(result, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(result).__name__}")
    x = torch.rand(*input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return result(x)


PROBES: dict[str, Callable] = {"module": _probe_module, "step": _probe_step, "apply": _probe_apply}


# ----------------------------------------------------------------------------------------------
# Normalised values and the comparison
# ----------------------------------------------------------------------------------------------


def _type_names(exc: BaseException) -> list[str]:
    return [c.__name__ for c in type(exc).__mro__]


def normalise(value, _count: list | None = None):
    """Turn a Python value into a comparable tree of plain data (see the module docstring)."""
    count = _count if _count is not None else [0]
    count[0] += 1
    if count[0] > MAX_NODES:
        raise ValueError(f"value too large to grade (more than {MAX_NODES} parts)")
    if value is None:
        return ("none",)
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if isinstance(value, (int, np.integer)):
        return ("int", int(value))
    if isinstance(value, (float, np.floating)):
        return ("float", float(value))
    if isinstance(value, str):
        return ("str", value[:10_000])
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            return ("other", f"numpy array of dtype {value.dtype}")
        return ("ndarray", np.array(value))
    if type(value).__module__.startswith("torch") and type(value).__name__ in ("Tensor", "Parameter"):
        t = value.detach().cpu()
        dtype = str(t.dtype)
        if t.is_floating_point() and t.dtype not in (_torch().float32, _torch().float64):
            t = t.float()
        if t.is_complex():
            return ("other", f"tensor of dtype {dtype}")
        return ("tensor", t.numpy().copy(), dtype)
    if isinstance(value, (list, tuple)):
        return ("list" if isinstance(value, list) else "tuple", [normalise(v, count) for v in value])
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return ("other", "dict with non-string keys")
        return ("dict", {k: normalise(v, count) for k, v in value.items()})
    return ("other", type(value).__name__)


def _torch():
    import torch
    return torch


def _describe(node) -> str:
    kind = node[0]
    if kind in ("ndarray", "tensor"):
        name = "numpy array" if kind == "ndarray" else "torch tensor"
        dtype = node[2] if kind == "tensor" else str(node[1].dtype)
        return f"a {name} of shape {tuple(node[1].shape)} and dtype {dtype}"
    if kind == "error":
        return f"an exception {node[1][0]}"
    if kind == "other":
        return f"an object of type {node[1]}"
    if kind in ("list", "tuple", "dict"):
        return f"a {kind} of length {len(node[1])}"
    return f"{kind} {node[1]!r}" if len(node) > 1 else kind


def compare(got, want, atol: float = 1e-5, rtol: float = 1e-4, path: str = "result") -> str | None:
    """``None`` when normalised ``got`` matches ``want``; otherwise a one-line reason."""
    gk, wk = got[0], want[0]
    if wk == "error":
        if gk == "error" and want[1][0] in got[1]:
            return None
        return f"{path}: expected an exception {want[1][0]}, got {_describe(got)}"
    if gk == "error":
        return f"{path}: raised {got[1][0]}: {str(got[2])[:200]}"
    if wk in ("ndarray", "tensor"):
        if gk != wk:
            return f"{path}: expected {_describe(want)}, got {_describe(got)}"
        g, w = got[1], want[1]
        if g.shape != w.shape:
            return f"{path}: expected shape {tuple(w.shape)}, got {tuple(g.shape)}"
        gkind, wkind = g.dtype.kind, w.dtype.kind
        if (wkind == "f") != (gkind == "f") or (wkind == "b") != (gkind == "b"):
            return f"{path}: expected dtype like {want[2] if wk == 'tensor' else w.dtype}, got " \
                   f"{got[2] if gk == 'tensor' else g.dtype}"
        if g.size == 0:
            return None
        gf, wf = g.astype(np.float64), w.astype(np.float64)
        if not np.allclose(gf, wf, atol=atol, rtol=rtol, equal_nan=True):
            bad = ~np.isclose(gf, wf, atol=atol, rtol=rtol, equal_nan=True)
            err = np.nanmax(np.abs(gf - wf)) if np.isfinite(gf).all() else float("nan")
            return (f"{path}: {int(bad.sum())} of {g.size} values differ "
                    f"(largest difference {err:.3g}, tolerance atol={atol:g}, rtol={rtol:g})")
        return None
    if wk == "float":
        if gk not in ("float", "int") or gk == "bool":
            return f"{path}: expected a number, got {_describe(got)}"
        g, w = float(got[1]), float(want[1])
        if not (math.isclose(g, w, rel_tol=rtol, abs_tol=atol) or (math.isnan(g) and math.isnan(w))):
            return f"{path}: expected {w:.6g}, got {g:.6g}"
        return None
    if wk in ("int", "bool", "str", "none"):
        if gk != wk:
            return f"{path}: expected {_describe(want)}, got {_describe(got)}"
        if len(want) > 1 and got[1] != want[1]:
            return f"{path}: expected {want[1]!r}, got {got[1]!r}"
        return None
    if wk in ("list", "tuple"):
        if gk not in ("list", "tuple"):
            return f"{path}: expected a {wk}, got {_describe(got)}"
        if len(got[1]) != len(want[1]):
            return f"{path}: expected {len(want[1])} items, got {len(got[1])}"
        for i, (g, w) in enumerate(zip(got[1], want[1])):
            reason = compare(g, w, atol, rtol, f"{path}[{i}]")
            if reason:
                return reason
        return None
    if wk == "dict":
        if gk != "dict":
            return f"{path}: expected a dict, got {_describe(got)}"
        if set(got[1]) != set(want[1]):
            return f"{path}: expected keys {sorted(want[1])}, got {sorted(got[1])}"
        for k in want[1]:
            reason = compare(got[1][k], want[1][k], atol, rtol, f"{path}[{k!r}]")
            if reason:
                return reason
        return None
    return f"{path}: the reference is {_describe(want)}, which cannot be graded"


# ----------------------------------------------------------------------------------------------
# Files: normalised trees as JSON plus .npy arrays (read back with allow_pickle=False)
# ----------------------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def dump(node, folder: str, stem: str) -> Any:
    """Write a normalised tree: arrays as ``folder/stem_k.npy``; returns the JSON-able tree."""
    counter = [0]

    def enc(n):
        k = n[0]
        if k in ("ndarray", "tensor"):
            name = f"{stem}_{counter[0]}.npy"
            counter[0] += 1
            np.save(os.path.join(folder, name), np.ascontiguousarray(n[1]), allow_pickle=False)
            return [k, name] + ([n[2]] if k == "tensor" else [])
        if k in ("list", "tuple"):
            return [k, [enc(v) for v in n[1]]]
        if k == "dict":
            return [k, {key: enc(v) for key, v in n[1].items()}]
        return list(n)

    return enc(node)


def load(tree, folder: str, read_array: Callable[[str], np.ndarray] | None = None, _count=None, _depth=0):
    """Read back what :func:`dump` wrote. Untrusted input: every node is validated, at most
    :data:`MAX_NODES` of them, nested at most :data:`MAX_DEPTH` deep."""
    count = _count if _count is not None else [0]
    count[0] += 1
    if count[0] > MAX_NODES:
        raise ValueError("too many values")
    if _depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    if not isinstance(tree, list) or not tree or not isinstance(tree[0], str):
        raise ValueError("malformed value")
    k = tree[0]
    if k in ("ndarray", "tensor"):
        name = tree[1]
        if not isinstance(name, str) or not _SAFE_NAME.match(name) or name.startswith("."):
            raise ValueError(f"bad array file name {name!r}")
        path = os.path.join(folder, name)
        arr = read_array(path) if read_array else np.load(path, allow_pickle=False)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"array of dtype {arr.dtype} not allowed")
        return (k, arr, str(tree[2])[:40]) if k == "tensor" else (k, arr)
    if k in ("list", "tuple"):
        if not isinstance(tree[1], list):
            raise ValueError("malformed list")
        return (k, [load(v, folder, read_array, count, _depth + 1) for v in tree[1]])
    if k == "dict":
        if not isinstance(tree[1], dict):
            raise ValueError("malformed dict")
        return (k, {str(key)[:200]: load(v, folder, read_array, count, _depth + 1) for key, v in tree[1].items()})
    if k == "none":
        return ("none",)
    if k == "bool" and isinstance(tree[1], bool):
        return (k, tree[1])
    if k == "int" and isinstance(tree[1], int) and not isinstance(tree[1], bool):
        return (k, tree[1])
    if k == "float" and isinstance(tree[1], (int, float)) and not isinstance(tree[1], bool):
        return (k, float(tree[1]))
    if k in ("str", "other") and isinstance(tree[1], str):
        return (k, tree[1][:10_000])
    if k == "error" and isinstance(tree[1], list) and all(isinstance(t, str) for t in tree[1]):
        return (k, [t[:100] for t in tree[1][:50]], str(tree[2])[:500])
    raise ValueError(f"malformed value of kind {k!r}")


def dump_spec(value, folder: str, stem: str):
    """Inputs for the sandbox: fixtures stay specifications, everything else is materialised."""
    if isinstance(value, Fixture):
        return ["fixture", value.name, dict(value.params)]
    return dump(normalise(_make(value)), folder, stem)


def load_spec(tree, folder: str):
    """Inverse of :func:`dump_spec` (inside the sandbox): real arrays, tensors and fixtures."""
    if isinstance(tree, list) and tree and tree[0] == "fixture":
        return FIXTURES[tree[1]](**tree[2])
    return _live(load(tree, folder))


def _live(node):
    k = node[0]
    if k == "ndarray":
        return node[1]
    if k == "tensor":
        t = _torch().from_numpy(node[1])
        dt = getattr(_torch(), node[2].replace("torch.", ""), None)
        return t.to(dt) if isinstance(dt, _torch().dtype) else t
    if k == "list":
        return [_live(v) for v in node[1]]
    if k == "tuple":
        return tuple(_live(v) for v in node[1])
    if k == "dict":
        return {key: _live(v) for key, v in node[1].items()}
    return None if k == "none" else node[1]


# ----------------------------------------------------------------------------------------------
# check(): the one declaration
# ----------------------------------------------------------------------------------------------


def _call(fn, args, kwargs, probe):
    """Call and normalise; an exception becomes ("error", [type names], message)."""
    try:
        result = fn(*args, **kwargs)
        if probe is not None:
            result = probe(result, args, kwargs)
        return normalise(result)
    except Exception as exc:  # noqa: BLE001 - every failure is a graded outcome
        return ("error", _type_names(exc), str(exc)[:500])


def _want(case: Case, ref, fn, probe):
    if case.raises is not None:
        return ("error", [case.raises.__name__], "")
    if case.has_expect:
        return normalise(case.expect)
    args, kwargs = case.materialise()
    return _call(ref if ref is not None else fn, args, kwargs, probe)


def check(fn: Callable, cases: list[Case], *, ref: Callable | None = None, name: str | None = None,
          atol: float = 1e-5, rtol: float = 1e-4, probe: Probe | None = None,
          points: float | None = None, hint: str | None = None) -> None:
    """Check ``fn`` on every case against ``ref`` (or each case's ``expect`` / ``raises``).

    In a student's kernel (and under nbgrader) this raises ``AssertionError`` naming the first
    failing case; under ``cvdl grade`` it records the cases instead (see the module docstring).

    ``points``: partial credit under ``cvdl grade`` — this check earns these points when all its
    cases pass (then every check of the part gives points, and they add up to the test cell's
    points; without ``points`` the part is all or nothing, as in nbgrader). ``hint``: one line the
    student's feedback shows when this check fails (for a hidden check, the only thing shown).
    """
    name = name or getattr(fn, "__name__", None)
    if not name or not name.isidentifier():
        raise ValueError(f"check needs the function's name (pass name=...), got {name!r}")
    if not cases:
        raise ValueError("check needs at least one Case")
    if points is not None and not (isinstance(points, (int, float)) and math.isfinite(points) and points > 0):
        raise ValueError(f"check's points must be a positive number, got {points!r}")
    if hint is not None and (not isinstance(hint, str) or not hint.strip() or "\n" in hint.strip()):
        raise ValueError("check's hint must be one line of text")
    ctx = _CONTEXT
    if ctx is not None and ctx.get("mode") == "record":
        return _record(fn, cases, ref, name, atol, rtol, probe, ctx, points, hint)
    failures = []
    for i, case in enumerate(cases):
        want = _want(case, ref, fn, probe)
        if want[0] == "error" and case.raises is None:
            raise RuntimeError(f"the reference for {name} failed on case {i + 1}: {want[1][0]}: {want[2]}")
        args, kwargs = case.materialise()
        got = _call(fn, args, kwargs, probe)
        reason = compare(got, want, atol, rtol)
        if reason:
            failures.append(f"case {i + 1}: {reason}")
    if failures:
        raise AssertionError(f"{name}: {len(failures)} of {_cases(len(cases))} failed\n  " +
                             "\n  ".join(failures) + (f"\nhint: {hint.strip()}" if hint else ""))
    print(f"{name}: " + ("the 1 case passed" if len(cases) == 1 else f"all {len(cases)} cases passed"))


def _cases(n: int) -> str:
    return "1 case" if n == 1 else f"{n} cases"


def _record(fn, cases, ref, name, atol, rtol, probe, ctx, points=None, hint=None) -> None:
    folder = ctx["folder"]
    entry = {"fn": name, "atol": atol, "rtol": rtol, "hidden": bool(ctx.get("hidden")),
             "probe": [probe.name, dict(probe.params)] if probe else None, "cases": [],
             "points": None if points is None else float(points), "hint": hint.strip() if hint else None}
    n = len(ctx["checks"])
    for i, case in enumerate(cases):
        want = _want(case, ref, fn, probe)
        args, kwargs = case.materialise()
        got = _call(fn, args, kwargs, probe)
        reason = compare(got, want, atol, rtol)
        if reason:  # the solution must pass its own tests, or grading would be meaningless
            raise AssertionError(f"the solution fails its own check of {name}, case {i + 1}: {reason}")
        stem = f"c{n}_{i}"
        entry["cases"].append({
            "args": [dump_spec(a, folder, f"{stem}_a{j}") for j, a in enumerate(case.args)],
            "kwargs": {k: dump_spec(v, folder, f"{stem}_k{k}") for k, v in case.kwargs.items()},
            "want": dump(want, folder, f"{stem}_w"),
        })
    entry["part"] = ctx["part"]
    ctx["checks"].append(entry)


def run_part(checks: list[dict], namespace: dict, in_folder: str, out_folder: str, part: str,
             sign: Callable[[bytes], str] | None = None) -> None:
    """Harness (inside the sandbox): call the student's functions on the recorded inputs and write
    the raw, normalised results to ``out_folder/<part>.json``. Computes no verdict.

    ``sign`` (the runner's, keyed by the token only it read): the file holds ``{"payload":
    {"results": [...], "files": {array file: sha256}}, "sig": sign(canonical payload)}``, so that
    a later cell that rewrites this part's results (or its arrays) is caught by the grader."""
    results = []
    for ci, chk in enumerate(checks):
        fn = namespace.get(chk["fn"])
        probe = Probe(chk["probe"][0], **chk["probe"][1]) if chk.get("probe") else None
        for k, case in enumerate(chk["cases"]):
            try:
                if not callable(fn):
                    raise NameError(f"{chk['fn']} is not defined (or not a function)")
                args = []
                for a in case["args"]:
                    v = load_spec(a, in_folder)
                    if isinstance(a, list) and a[0] == "fixture" and isinstance(v, tuple):
                        args.extend(v)
                    else:
                        args.append(v)
                kwargs = {key: load_spec(v, in_folder) for key, v in case["kwargs"].items()}
                node = _call(fn, args, kwargs, probe)
            except Exception as exc:  # noqa: BLE001
                node = ("error", _type_names(exc), str(exc)[:500])
            try:
                tree = dump(node, out_folder, f"{part}_{ci}_{k}")
            except Exception as exc:  # noqa: BLE001 - e.g. an unsavable array
                tree = ["error", _type_names(exc), str(exc)[:500]]
            results.append(tree)
    if sign is None:
        atomic_write_text(os.path.join(out_folder, f"{part}.json"), json.dumps(results))
        return
    import hashlib
    files = {}
    for tree in results:
        for name in _array_files(tree):
            with open(os.path.join(out_folder, name), "rb") as f:
                files[name] = hashlib.sha256(f.read()).hexdigest()
    payload = {"part": part, "results": results, "files": files}
    atomic_write_text(os.path.join(out_folder, f"{part}.json"),
                      json.dumps({"payload": payload, "sig": sign(canonical(payload))}))


def canonical(payload) -> bytes:
    """The bytes a part's results are signed over (the same after a JSON round trip)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def _array_files(tree) -> list[str]:
    if isinstance(tree, list) and tree and tree[0] in ("ndarray", "tensor") and len(tree) > 1:
        return [tree[1]]
    if isinstance(tree, list) and len(tree) > 1 and tree[0] in ("list", "tuple") and isinstance(tree[1], list):
        return [f for t in tree[1] for f in _array_files(t)]
    if isinstance(tree, list) and len(tree) > 1 and tree[0] == "dict" and isinstance(tree[1], dict):
        return [f for t in tree[1].values() for f in _array_files(t)]
    return []


# ----------------------------------------------------------------------------------------------
# Trusted references the labs compare against (cvdl/grading/_refs.py; absent in the sandbox)
# ----------------------------------------------------------------------------------------------


class _NoRefs:
    """``refs`` inside the grader's sandbox: the references are deliberately not there."""

    def __getattr__(self, name: str):
        raise AttributeError(f"refs.{name}: the reference implementations are not available "
                             "while a submission is being graded")

    def __repr__(self) -> str:
        return "<refs: not available in the grader's sandbox>"


try:
    from ._refs import refs
except ImportError:  # the sandbox's copy of cvdl/grading holds only labcheck and labrun
    refs = _NoRefs()
