"""cvdl.arith against real torch.nn layers.

Every formula is checked on random configurations (10 000 in all, fixed seed) against the
output shape of a real ``nn.Conv2d`` / ``nn.ConvTranspose2d`` / ``nn.MaxPool2d`` /
``nn.AvgPool2d`` forward pass on a 1-channel CPU tensor, *including* the configurations
PyTorch rejects: ``cvdl.arith`` must raise ``ValueError`` exactly when PyTorch raises.
Height and width get independent random parameters, so both axes are exercised.

Constructing an ``nn.Conv2d`` costs ~2 ms (Kaiming init), a forward pass on a tiny tensor
~20 µs, so one module per kernel size is built and its ``stride`` / ``padding`` /
``dilation`` / ``output_padding`` attributes are set before each call; ``forward`` reads
exactly those attributes, so the call is the layer's real forward pass.
"""
from __future__ import annotations

import random
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from cvdl import arith, arith_figures  # noqa: E402

SEED = 0
N_CONV, N_TRANSPOSED, N_MAXPOOL, N_AVGPOOL = 3500, 3500, 1500, 1500  # 10 000 in all


# --------------------------------------------------------------------------- helpers

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _torch_shape(layer: nn.Module, h: int, w: int) -> tuple[int, int] | None:
    """Spatial output shape of a real forward pass, or None when PyTorch raises."""
    x = torch.zeros(1, 1, h, w)
    try:
        with torch.no_grad():
            return tuple(layer(x).shape[-2:])
    except RuntimeError:
        return None


def _ours(fn, *per_axis_args, **kw) -> tuple[int, int] | None:
    """``fn`` applied per axis; None when it raises ValueError on either axis."""
    try:
        return tuple(fn(*args, **kw) for args in per_axis_args)
    except ValueError:
        return None


class _Modules:
    """One real module per kernel size (construction is the slow part)."""

    def __init__(self, cls, **kw):
        self.cls, self.kw, self.cache = cls, kw, {}

    def get(self, kernel_size: tuple[int, int], **attrs) -> nn.Module:
        if kernel_size not in self.cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # zero-size kernels: "Initializing zero-element tensors"
                self.cache[kernel_size] = self.cls(1, 1, kernel_size, **self.kw)
        layer = self.cache[kernel_size]
        for name, value in attrs.items():
            setattr(layer, name, value)
        return layer


def _maybe_bad(rng: random.Random, value: int, bad: int, p: float = 0.03) -> int:
    """Usually ``value``; with probability ``p`` an invalid ``bad`` value."""
    return bad if rng.random() < p else value


def _compare(results: list, label: str, min_valid: float = 0.5, min_invalid: int = 30) -> None:
    """results: (config, ours, theirs). Reports every mismatch; checks both branches were hit."""
    bad = [(cfg, o, t) for cfg, o, t in results if o != t]
    assert not bad, f"{label}: {len(bad)}/{len(results)} mismatches, first: {bad[:5]}"
    n_valid = sum(t is not None for _, _, t in results)
    assert n_valid >= min_valid * len(results), f"{label}: only {n_valid} valid configurations"
    assert len(results) - n_valid >= min_invalid, f"{label}: only {len(results) - n_valid} invalid configurations"


# --------------------------------------------------------------------------- formulas vs torch

def test_conv_output_size_matches_conv2d():
    rng = random.Random(SEED)
    modules = _Modules(nn.Conv2d)
    results = []
    for _ in range(N_CONV):
        axes = []
        for _axis in range(2):
            i = rng.randint(1, 24)
            k = _maybe_bad(rng, rng.randint(1, 7), 0)
            s = _maybe_bad(rng, rng.randint(1, 5), 0)
            p = _maybe_bad(rng, rng.randint(0, 4), -1)
            d = _maybe_bad(rng, rng.randint(1, 3), 0)
            axes.append((i, k, s, p, d))
        (hi, hk, hs, hp, hd), (wi, wk, ws, wp, wd) = axes
        layer = modules.get((hk, wk), stride=(hs, ws), padding=(hp, wp), dilation=(hd, wd))
        results.append((axes, _ours(arith.conv_output_size, *axes), _torch_shape(layer, hi, wi)))
    _compare(results, "Conv2d")


def test_transposed_output_size_matches_conv_transpose2d():
    rng = random.Random(SEED + 1)
    modules = _Modules(nn.ConvTranspose2d)
    results, empty = [], 0
    for _ in range(N_TRANSPOSED):
        axes = []
        for _axis in range(2):
            i = rng.randint(1, 12)
            k = _maybe_bad(rng, rng.randint(1, 5), 0)
            s = _maybe_bad(rng, rng.randint(1, 4), 0)
            p = _maybe_bad(rng, rng.randint(0, 5), -1)
            d = _maybe_bad(rng, rng.randint(1, 3), 0)
            a_max = max(s, d, 1) - 1 + (rng.random() < 0.1)  # sometimes one too many
            a = _maybe_bad(rng, rng.randint(0, a_max), -1)
            axes.append((i, k, s, p, d, a))
        (hi, hk, hs, hp, hd, ha), (wi, wk, ws, wp, wd, wa) = axes
        layer = modules.get((hk, wk), stride=(hs, ws), padding=(hp, wp), dilation=(hd, wd),
                            output_padding=(ha, wa))
        theirs = _torch_shape(layer, hi, wi)
        if theirs is not None and 0 in theirs:
            # PyTorch (2.x, CPU) is inconsistent about an empty output o' = 0: depending on
            # the code path it raises "Output size is too small" (k=1, p=1 on 2×2) or returns
            # a 0-size axis (k=5, p=3 on 2×2). cvdl.arith always rejects o' < 1; here we check
            # that the formula gives exactly 0 on the empty axes.
            empty += 1
            assert [s * (i - 1) + a + arith.effective_kernel_size(k, d) - 2 * p
                    for (i, k, s, p, d, a), n in zip(axes, theirs) if n == 0] == [0] * theirs.count(0)
            theirs = None
        results.append((axes, _ours(arith.transposed_output_size, *axes), theirs))
    _compare(results, "ConvTranspose2d")
    assert empty < 0.01 * N_TRANSPOSED


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_output_size_matches_pool2d(kind):
    rng = random.Random(SEED + (2 if kind == "max" else 3))
    results = []
    for _ in range(N_MAXPOOL if kind == "max" else N_AVGPOOL):
        i = (rng.randint(1, 20), rng.randint(1, 20))
        k = (_maybe_bad(rng, rng.randint(1, 6), 0), rng.randint(1, 6))
        s = None if rng.random() < 0.2 else (_maybe_bad(rng, rng.randint(1, 4), 0), rng.randint(1, 4))
        # mostly valid padding (p ≤ k/2), sometimes one too many, sometimes negative
        p = tuple(_maybe_bad(rng, rng.randint(0, k[a] // 2 + (rng.random() < 0.15)), -1) for a in range(2))
        d = (rng.randint(1, 3), rng.randint(1, 3)) if kind == "max" else (1, 1)
        ceil_mode = rng.random() < 0.5
        if kind == "max":
            layer = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil_mode)
        else:
            layer = nn.AvgPool2d(k, s, p, ceil_mode=ceil_mode)
        axes = [(i[a], k[a], None if s is None else s[a], p[a], d[a]) for a in range(2)]
        ours = _ours(arith.pool_output_size, *axes, ceil_mode=ceil_mode)
        results.append(((axes, ceil_mode), ours, _torch_shape(layer, *i)))
    _compare(results, f"{kind} pool")


def test_the_four_special_cases_of_dumoulin_visin():
    """Relationships 1–4 are the general formula at p = 0, any p, half and full padding."""
    rng = random.Random(SEED + 4)
    for _ in range(300):
        i, k, d = rng.randint(1, 30), rng.randint(1, 7), rng.randint(1, 3)
        kh = arith.effective_kernel_size(k, d)
        conv = nn.Conv2d(1, 1, k, dilation=d, device="meta")
        if kh <= i:
            assert arith.conv_output_size(i, k, d=d) == i - kh + 1  # rel. 1
        conv.padding = (arith.full_padding(k, d),) * 2
        out = tuple(conv(torch.zeros(1, 1, i, i, device="meta")).shape[-2:])
        assert arith.conv_output_size(i, k, p=arith.full_padding(k, d), d=d) == i + kh - 1 == out[0]  # rel. 4
        if kh % 2:
            conv.padding = (arith.same_padding(k, d),) * 2
            out = tuple(conv(torch.zeros(1, 1, i, i, device="meta")).shape[-2:])
            assert arith.conv_output_size(i, k, p=arith.same_padding(k, d), d=d) == i == out[0]  # rel. 3
        else:
            with pytest.raises(ValueError, match="odd"):
                arith.same_padding(k, d)
    assert [arith.same_padding(f) for f in (3, 5, 7)] == [1, 2, 3]  # the slide's (F − 1)/2


def test_fits_and_strict_mode():
    # the slide: 7×7 input, 3×3 filter
    assert [arith.conv_output_size(7, 3, s) for s in (1, 2, 3)] == [5, 3, 2]
    assert [arith.fits(7, 3, s) for s in (1, 2, 3)] == [True, True, False]
    assert arith.remainder(7, 3, 3) == 1
    with pytest.raises(ValueError, match="stride 3 does not fit"):
        arith.conv_output_size(7, 3, 3, strict=True)
    assert arith.conv_output_size(7, 3, 2, strict=True) == 3
    # fits ⟺ the windows tile the padded input: last window ends exactly at its edge
    rng = random.Random(SEED + 5)
    for _ in range(500):
        i, k, s, p, d = rng.randint(1, 30), rng.randint(1, 5), rng.randint(1, 4), rng.randint(0, 3), rng.randint(1, 2)
        try:
            o = arith.conv_output_size(i, k, s, p, d)
        except ValueError:
            continue
        last_end = (o - 1) * s + arith.effective_kernel_size(k, d)
        assert arith.remainder(i, k, s, p, d) == i + 2 * p - last_end
        assert arith.fits(i, k, s, p, d) == (last_end == i + 2 * p)


@pytest.mark.parametrize("call, message", [
    (lambda: arith.conv_output_size(7, 3, 0), "stride s must be a positive integer, got 0"),
    (lambda: arith.conv_output_size(7, 3, 1, -1), "padding p must be a non-negative integer, got -1"),
    (lambda: arith.conv_output_size(7, 0), "kernel size k must be a positive integer, got 0"),
    (lambda: arith.conv_output_size(7, 3, d=0), "dilation d must be a positive integer, got 0"),
    (lambda: arith.conv_output_size(3, 5), r"k̂ = 5 .* larger than i \+ 2p = 3"),
    (lambda: arith.conv_output_size(7, 3, d=4), r"k̂ = 9"),
    (lambda: arith.transposed_output_size(4, 3, 2, output_padding=2), "output_padding must be smaller"),
    (lambda: arith.transposed_output_size(1, 1, 1, 1), "below 1"),
    (lambda: arith.pool_output_size(7, 3, 1, 2), r"p ≤ ⌊k/2⌋ = ⌊3/2⌋ = 1, got p = 2"),
    (lambda: arith.pool_output_size(9, 3, 1, 2, d=2), r"p ≤ ⌊k/2⌋ = ⌊3/2⌋ = 1, got p = 2"),
    (lambda: arith.conv_params(3, 10, 5, groups=2), "divisible by groups"),
    (lambda: arith.receptive_field([(3, 0)]), "stride s must be a positive integer, got 0"),
    (lambda: arith.receptive_field([nn.Linear(3, 3)]), "does not know how Linear"),
])
def test_bad_input_raises_value_error_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("call, message", [
    (lambda: arith.conv_output_size(7.0, 3), r"input size i must be a positive integer, got 7.0 \(float\)"),
    (lambda: arith.conv_output_size(True, 3), r"input size i must be a positive integer, got True \(bool\)"),
    (lambda: arith.pool_output_size(7, 2, p=None), r"padding p must be a non-negative integer, got None"),
    (lambda: arith.conv_params(3, 10, 2.5), r"kernel height must be a positive integer, got 2.5"),
])
def test_wrong_type_raises_type_error_naming_the_value(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_integer_scalars_of_numpy_and_torch_are_accepted():
    assert arith.conv_output_size(np.int64(7), torch.tensor(3), s=np.int32(2)) == 3


def test_output_padding_inverts_conv():
    """conv maps s different sizes to one; output_padding = (i + 2p − k̂) mod s picks i back."""
    rng = random.Random(SEED + 6)
    checked = 0
    for _ in range(400):
        i, k, s, p, d = rng.randint(1, 20), rng.randint(1, 5), rng.randint(1, 4), rng.randint(0, 2), rng.randint(1, 2)
        try:
            o = arith.conv_output_size(i, k, s, p, d)
        except ValueError:
            continue
        a = arith.transposed_output_padding(i, k, s, p, d)
        assert 0 <= a < s
        up = nn.ConvTranspose2d(1, 1, k, s, p, output_padding=a, dilation=d, device="meta")
        assert up(torch.zeros(1, 1, o, o, device="meta")).shape[-1] == i
        assert arith.transposed_output_size(o, k, s, p, d, a) == i
        checked += 1
    assert checked > 200
    # the worked example: 7 and 8 both go to 4 at k=3, s=2, p=1
    assert arith.conv_output_size(7, 3, 2, 1) == arith.conv_output_size(8, 3, 2, 1) == 4
    assert [arith.transposed_output_size(4, 3, 2, 1, output_padding=a) for a in (0, 1)] == [7, 8]


def test_transposed_conv_is_a_conv_over_the_stretched_input():
    """D&V §4: conv_transpose2d = stride-1 conv2d over the zero-stretched, padded input with
    the flipped kernel. Checked on values, not just sizes."""
    rng = random.Random(SEED + 7)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(150):
        i, k, s, d = rng.randint(1, 7), rng.randint(1, 4), rng.randint(1, 3), rng.randint(1, 2)
        kh = arith.effective_kernel_size(k, d)
        p, a = rng.randint(0, kh - 1), rng.randint(0, max(s, d) - 1)
        try:
            eq = arith.transposed_as_conv(i, k, s, p, d, a)
        except ValueError:
            continue
        x = torch.randn(1, 1, i, i, generator=gen, dtype=torch.float64)
        w = torch.randn(1, 1, k, k, generator=gen, dtype=torch.float64)
        ref = F.conv_transpose2d(x, w, stride=s, padding=p, output_padding=a, dilation=d)
        z = torch.zeros(1, 1, eq.stretched, eq.stretched, dtype=torch.float64)
        z[..., ::s, ::s] = x  # s − 1 zeros between neighbours
        z = F.pad(z, (eq.pad_before, eq.pad_after) * 2)
        ours = F.conv2d(z, w.flip(-1, -2), dilation=d)
        assert ref.shape[-1] == eq.output == ours.shape[-1]
        torch.testing.assert_close(ours, ref)


# --------------------------------------------------------------------------- receptive field

def _empirical_rf(model: nn.Sequential, size: int) -> tuple[int, int, int, int] | None:
    """(output index u, first, last input index touched, output size) along height, measured
    by the gradient of output unit (u, u) w.r.t. an all-ones input through all-ones weights."""
    x = torch.ones(1, 1, size, size, requires_grad=True)
    y = model(x)
    u = y.shape[-1] // 2
    y[0, 0, u, u].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1) > 0).flatten()
    return u, int(rows.min()), int(rows.max()), y.shape[-1]


def test_receptive_field_matches_gradient_of_real_stack():
    rng = random.Random(SEED + 8)
    checked = 0
    for _ in range(60):
        layers, specs = [], []
        for _ in range(rng.randint(1, 4)):
            k, s, d = rng.randint(1, 5), rng.randint(1, 2), rng.randint(1, 3)
            if rng.random() < 0.25:
                k, p, d = rng.randint(2, 3), 0, 1
                layers.append(nn.AvgPool2d(k, s))  # gradient reaches every pixel of the window
                specs.append((k, s, p, d))
            else:
                p = rng.randint(0, 2)
                conv = nn.Conv2d(1, 1, k, s, p, d)
                nn.init.ones_(conv.weight)
                nn.init.zeros_(conv.bias)
                layers.append(conv)
                specs.append((k, s, p, d))
            layers.append(nn.ReLU())
        model = nn.Sequential(*layers)
        rf = arith.receptive_field_trace(model)[-1]
        assert rf == arith.receptive_field_trace(specs)[-1]  # modules and tuples agree
        size = 2 * rf.size + 4 * rf.jump + 8
        try:
            arith.predict_shape(model, (1, 1, size, size))
        except ValueError:
            continue
        u, first, last, o = _empirical_rf(model, size)
        lo = rf.start + u * rf.jump - (rf.size - 1) / 2
        hi = rf.start + u * rf.jump + (rf.size - 1) / 2
        if lo < 0 or hi > size - 1:
            continue  # window partly in the padding: the gradient cannot see all of it
        assert (first, last) == (lo, hi), f"{specs}: measured [{first}, {last}], predicted [{lo}, {hi}]"
        assert last - first + 1 == arith.receptive_field(specs)
        checked += 1
    assert checked >= 30, checked


def test_receptive_field_of_1d_and_3d_layers_matches_the_tuples():
    # 1-d layers store (k,) tuples (MaxPool1d an int); 3-d layers (d, h, w): the asked axis is used
    one_d = nn.Sequential(nn.Conv1d(1, 1, 3, stride=2, padding=1, dilation=2), nn.ReLU(),
                          nn.MaxPool1d(2), nn.AvgPool1d(3, stride=1, padding=1), nn.Conv1d(1, 1, 5))
    specs = [(3, 2, 1, 2), (2, 2, 0, 1), (3, 1, 1, 1), (5, 1, 0, 1)]
    assert arith.receptive_field_trace(one_d) == arith.receptive_field_trace(specs)
    for axis in (0, 1):  # a 1-d layer is the same along any axis asked for
        assert arith.receptive_field(one_d, axis=axis) == arith.receptive_field(specs)
    two_d = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2, padding=1, dilation=2), nn.MaxPool2d(2),
                          nn.AvgPool2d(3, stride=1, padding=1), nn.Conv2d(1, 1, 5))
    assert arith.receptive_field_trace(one_d) == arith.receptive_field_trace(two_d)
    # 3-d: a different size along each axis, each equal to the 2-d / tuple answer for that axis
    three_d = nn.Sequential(nn.Conv3d(1, 1, (1, 3, 5), stride=(1, 2, 1), padding=(0, 1, 2)),
                            nn.MaxPool3d((1, 2, 3)), nn.AvgPool3d((2, 3, 1), stride=1))
    per_axis = {0: [(1, 1, 0), (1, 1, 0), (2, 1, 0)], 1: [(3, 2, 1), (2, 2, 0), (3, 1, 0)],
                2: [(5, 1, 2), (3, 3, 0), (1, 1, 0)]}
    for axis, tuples in per_axis.items():
        assert arith.receptive_field_trace(three_d, axis=axis) == arith.receptive_field_trace(tuples), axis
    hw = nn.Sequential(nn.Conv2d(1, 1, (3, 5), stride=(2, 1), padding=(1, 2)), nn.MaxPool2d((2, 3)),
                       nn.AvgPool2d((3, 1), stride=1))
    for axis in (0, 1):
        assert arith.receptive_field_trace(three_d, axis=axis + 1) == arith.receptive_field_trace(hw, axis=axis)
    with pytest.raises(ValueError, match=r"axis must be in 0..2 .*kernel_size is \(1, 3, 5\), got 3"):
        arith.receptive_field(three_d, axis=3)
    with pytest.raises(TypeError, match="axis must be a non-negative integer"):
        arith.receptive_field(three_d, axis=1.0)


def _measured_rf_1d(layers, size: int = 64) -> int:
    """Receptive field of the centre output unit, from the gradient through all-ones weights."""
    for m in layers:
        if isinstance(m, nn.Conv1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    x = torch.ones(1, 1, size, requires_grad=True)
    y = layers(x)
    y[0, 0, y.shape[-1] // 2].backward()
    where = torch.nonzero(x.grad[0, 0]).flatten()
    return int(where.max() - where.min()) + 1


def test_receptive_field_of_1d_layers_matches_their_gradient():
    layers = nn.Sequential(nn.Conv1d(1, 1, 3, dilation=2), nn.AvgPool1d(2), nn.Conv1d(1, 1, 3, stride=2),
                           nn.AvgPool1d(3, stride=1))
    assert _measured_rf_1d(layers) == arith.receptive_field(layers) == 18


def test_three_3x3_convs_see_7x7():
    assert arith.receptive_field([(3,)] * 3) == 7 == arith.receptive_field([(7,)])
    assert arith.receptive_field([]) == 1
    c = 64
    three = nn.Sequential(*[nn.Conv2d(c, c, 3, bias=False, device="meta") for _ in range(3)])
    one = nn.Conv2d(c, c, 7, bias=False, device="meta")
    assert sum(p.numel() for p in three.parameters()) == 3 * arith.conv_params(c, c, 3, bias=False) == 27 * c * c
    assert sum(p.numel() for p in one.parameters()) == arith.conv_params(c, c, 7, bias=False) == 49 * c * c


# --------------------------------------------------------------------------- parameters & shapes

def test_conv_params_match_torch():
    rng = random.Random(SEED + 9)
    assert arith.conv_params(3, 10, 5) == 760  # the slide: 10 · (5·5·3 + 1)
    assert arith.conv_params(64, 32, 1) == 64 * 32 + 32
    for _ in range(300):
        g = rng.choice([1, 1, 2, 4])
        cin, cout = g * rng.randint(1, 8), g * rng.randint(1, 8)
        k = (rng.randint(1, 7), rng.randint(1, 7))
        bias = rng.random() < 0.5
        for cls in (nn.Conv2d, nn.ConvTranspose2d):
            layer = cls(cin, cout, k, bias=bias, groups=g, device="meta")
            assert arith.conv_params(cin, cout, k, bias=bias, groups=g) == sum(p.numel() for p in layer.parameters())
    for pool in (nn.MaxPool2d(2), nn.AvgPool2d(2)):
        assert sum(p.numel() for p in pool.parameters()) == 0


def test_predict_shape_of_a_sequential():
    rng = random.Random(SEED + 10)
    for _ in range(100):
        layers, c = [], 3
        for _ in range(rng.randint(1, 4)):
            kind = rng.choice(["conv", "convT", "max", "avg", "relu"])
            cout = rng.randint(1, 4)
            if kind == "conv":
                layers.append(nn.Conv2d(c, cout, rng.randint(1, 3), rng.randint(1, 2), rng.randint(0, 1)))
                c = cout
            elif kind == "convT":
                s = rng.randint(1, 2)
                layers.append(nn.ConvTranspose2d(c, cout, 3, s, 1, output_padding=rng.randint(0, s - 1)))
                c = cout
            elif kind == "max":
                layers.append(nn.MaxPool2d(2, ceil_mode=rng.random() < 0.5))
            elif kind == "avg":
                layers.append(nn.AvgPool2d(2))
            else:
                layers.append(nn.ReLU())
        model = nn.Sequential(*layers)
        shape = (2, 3, rng.randint(8, 20), rng.randint(8, 20))
        try:
            predicted = arith.predict_shape(model, shape)
        except ValueError:
            predicted = None
        try:
            with torch.no_grad():
                actual = tuple(model(torch.zeros(shape)).shape)
        except RuntimeError:
            actual = None
        assert predicted == actual, (model, shape)


# --------------------------------------------------------------------------- diagrams

@pytest.mark.parametrize("cfg", [
    dict(i=7, k=3, s=1), dict(i=7, k=3, s=2), dict(i=7, k=3, s=3), dict(i=5, k=3, s=2, p=1),
    dict(i=7, k=3, s=1, d=2), dict(i=5, k=4, s=1, p=3),
    dict(i=3, k=3, s=2, p=1, transposed=True), dict(i=3, k=3, s=2, p=1, transposed=True, output_padding=1),
    dict(i=2, k=3, s=1, transposed=True), dict(i=3, k=2, s=3, d=2, transposed=True, output_padding=2),
])
def test_diagram_matches_torch_sizes_and_taps(cfg):
    """The output grid has torch's size, and the input pixels shaded for each output position
    are exactly those its gradient reaches (all-ones weights and input)."""
    cfg = dict(cfg)
    transposed, a = cfg.pop("transposed", False), cfg.pop("output_padding", 0)
    i, k, s, p, d = cfg["i"], cfg["k"], cfg.get("s", 1), cfg.get("p", 0), cfg.get("d", 1)
    diagram = arith_figures.ConvDiagram(i, k, s, p, d, transposed=transposed, output_padding=a)
    try:
        x = torch.ones(1, 1, i, i, requires_grad=True)
        w = torch.ones(1, 1, k, k)
        if transposed:
            y = F.conv_transpose2d(x, w, stride=s, padding=p, output_padding=a, dilation=d)
        else:
            y = F.conv2d(x, w, stride=s, padding=p, dilation=d)
        assert y.shape[-1] == diagram.output
        kh = k + (k - 1) * (d - 1)
        grid = (i - 1) * s + 1 + 2 * (kh - 1 - p) + a if transposed else i + 2 * p
        assert diagram.grid == grid
        assert len(diagram.ax_in.patches) == grid ** 2 + 1  # cells + the window's outline
        assert len(diagram.ax_out.patches) == diagram.output ** 2
        assert sum(map(sum, diagram.real)) == i * i  # every input pixel drawn once
        for t in range(diagram.n_positions):
            x.grad = None
            r, c = divmod(t, diagram.output)
            y[0, 0, r, c].backward(retain_graph=True)
            reached = sorted(map(tuple, torch.nonzero(x.grad[0, 0]).tolist()))
            assert diagram.input_pixels(t) == reached, (cfg, t)
    finally:
        plt.close(diagram.fig)


def test_animation_frames_have_the_right_size():
    anim = arith_figures.animate_conv(5, 3, s=2, p=1, max_frames=4, dpi=40)
    diagram = anim.diagram
    assert diagram.output == arith.conv_output_size(5, 3, 2, 1) == 3
    assert diagram.frame_positions(4) == [0, 3, 5, 8]  # first and last position included
    assert (len(diagram.ax_in.patches), len(diagram.ax_out.patches)) == (7 * 7 + 1, 3 * 3)
    frames = []
    canvas = FigureCanvasAgg(diagram.fig)  # the animation closed its pyplot window
    for t in diagram.frame_positions(4):
        anim._func(t)
        canvas.draw()
        frame = np.asarray(canvas.buffer_rgba())
        # the frame is the figure at dpi=40 (Agg rounds the pixel size either way)
        assert abs(frame.shape[0] - 40 * diagram.fig.get_figheight()) < 1
        assert abs(frame.shape[1] - 40 * diagram.fig.get_figwidth()) < 1
        frames.append(bytes(frame))
    assert len({len(f) for f in frames}) == 1, "all frames have the same size"
    assert len(set(frames)) == 4, "every frame should shade a different position"
    html = anim.to_jshtml()
    assert "new Array(4)" in html and html.count("data:image/png;base64") == 4
    with pytest.raises(ValueError, match="position must be in"):
        diagram.taps(9)


def test_draw_conv_and_errors():
    fig = arith_figures.draw_conv(7, 3, s=2, position=4)
    assert len(fig.axes) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="exceeds"):
        arith_figures.ConvDiagram(5, 3, s=1, p=3, transposed=True)  # valid (o' = 1) but p > k̂ − 1
    with pytest.raises(ValueError, match="only applies to transposed"):
        arith_figures.ConvDiagram(5, 3, output_padding=1)


# --------------------------------------------------------------------------- explorer

def test_formulas_import_without_the_drawing_code():
    import subprocess
    import sys

    code = ("import sys; import cvdl.arith as a; "
            "assert 'matplotlib' not in sys.modules and 'cvdl.arith_figures' not in sys.modules; "
            "assert not hasattr(a, 'draw_conv')")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_explorer_runs_headless(capsys):
    diagram = arith_figures.explore(show=False)  # what the notebook calls directly
    assert (diagram.grid, diagram.output) == (7, 5)
    assert "= 5" in capsys.readouterr().out
    assert arith_figures.explore(7, 3, 1, 4, transposed=True, show=False) is None  # p > k̂ − 1
    assert "invalid configuration" in capsys.readouterr().out

    widget = arith_figures.explorer()
    sliders = {c.description: c for c in widget.children if hasattr(c, "description")}
    assert {"input i", "kernel k", "stride s", "padding p", "dilation d", "transposed"} <= set(sliders)
    assert widget.result.output == 5
    sliders["input i"].value = 9
    assert widget.result.output == 7  # the callback ran again with the new value
    sliders["transposed"].value = True
    assert widget.result.output == arith.transposed_output_size(9, 3) == 11
    plt.close("all")
