"""Convolution arithmetic: every size relationship of Dumoulin & Visin, implemented once.

V. Dumoulin and F. Visin, "A guide to convolution arithmetic for deep learning",
arXiv:1603.07285 (https://arxiv.org/abs/1603.07285). All relationships are per spatial axis
(height and width are computed the same way, independently), with

    i  input size            k  kernel size          s  stride
    p  zero padding (each side)                      d  dilation
    k̂ = k + (k − 1)(d − 1)   the effective (dilated) kernel size
    a  output padding of a transposed convolution, 0 ≤ a < s (PyTorch: a < max(s, d))

The relationships (numbers as in the paper) and the function that computes each one:

    1-6, 15  convolution      o  = ⌊(i + 2p − k̂) / s⌋ + 1                  conv_output_size
             "does it fit?"   (i + 2p − k̂) mod s == 0                      fits, remainder
             half (same)      p  = (k̂ − 1)/2  ⇒ o = i   (s = 1, k̂ odd)    same_padding
             full             p  = k̂ − 1      ⇒ o = i + k̂ − 1 (s = 1)     full_padding
    7        pooling          o  = ⌊(i + 2p − k̂) / s⌋ + 1, p ≤ ⌊k/2⌋        pool_output_size
    8-14     transposed       o' = s(i' − 1) + a + k̂ − 2p                  transposed_output_size
             ... with         a  = (i + 2p − k̂) mod s to invert a conv      transposed_output_padding
             ... as a direct convolution over a zero-stretched, padded input  transposed_as_conv

plus the receptive field of a stack of layers (``receptive_field``, ``receptive_field_trace``),
the parameter count of a convolution (``conv_params``), ``predict_shape`` for ``torch.nn``
layers, and ``describe`` (one configuration's arithmetic written out). The diagrams, animations
and the widget explorer live in :mod:`cvdl.arith_figures` and take their sizes from these
functions.

>>> conv_output_size(7, 3, s=2)
3
>>> fits(7, 3, s=3)
False
>>> transposed_output_size(4, 3, s=2, p=1, output_padding=1)
8
"""
from __future__ import annotations

import operator
from typing import Iterable, NamedTuple, Sequence

from . import _checks

__all__ = [
    "effective_kernel_size", "conv_output_size", "remainder", "fits", "same_padding",
    "full_padding", "pool_output_size", "transposed_output_size", "transposed_output_padding",
    "transposed_as_conv", "StretchedConv", "Layer", "ReceptiveField", "receptive_field",
    "receptive_field_trace", "conv_params", "predict_shape", "describe",
]


# --------------------------------------------------------------------------- validation

def _check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int ≥ ``minimum`` (0 or 1): ``TypeError`` for a non-integer (a bool
    included), ``ValueError`` below the minimum. NumPy / torch integer scalars are accepted."""
    if not isinstance(value, (int, bool)):
        try:  # numpy / torch integer scalars
            value = operator.index(value)
        except TypeError:
            pass  # the check below names the wrong type
    (_checks.positive_int if minimum == 1 else _checks.non_negative_int)(**{name: value})
    return int(value)


def _check_conv(i, k, s, p, d) -> tuple[int, int, int, int, int]:
    """Validate one axis of a convolution; return the ints and k̂."""
    i = _check_int("input size i", i, 1)
    k = _check_int("kernel size k", k, 1)
    s = _check_int("stride s", s, 1)
    p = _check_int("padding p", p, 0)
    d = _check_int("dilation d", d, 1)
    return i, k, s, p, d


# --------------------------------------------------------------------------- convolution

def effective_kernel_size(k: int, d: int = 1) -> int:
    """Size of a ``k``-tap kernel dilated by ``d``: k̂ = k + (k − 1)(d − 1).

    Dilation inserts ``d − 1`` holes between neighbouring taps (D&V §5.1), so a 3×3 kernel
    with d = 2 covers a 5×5 window while still having 9 weights.
    """
    k = _check_int("kernel size k", k, 1)
    d = _check_int("dilation d", d, 1)
    return k + (k - 1) * (d - 1)


def conv_output_size(i: int, k: int, s: int = 1, p: int = 0, d: int = 1, *, strict: bool = False) -> int:
    """Output size of a convolution along one axis (D&V relationships 1–6 and 15).

        o = ⌊(i + 2p − k̂) / s⌋ + 1,    k̂ = k + (k − 1)(d − 1)

    Special cases: no padding, unit stride (rel. 1) o = i − k + 1; padding p (rel. 2)
    o = i − k + 2p + 1; half padding p = ⌊k/2⌋ (rel. 3) o = i; full padding p = k − 1 (rel. 4)
    o = i + k − 1; strides (rel. 5, 6) the floor above; dilation (rel. 15) k → k̂.

    Args:
        i: input size (≥ 1). k: kernel size (≥ 1). s: stride (≥ 1).
        p: zero padding added to *each* side (≥ 0). d: dilation (≥ 1).
        strict: if True, raise when the stride does not fit exactly, i.e. when
            ``(i + 2p − k̂) / s`` is not an integer (the slide's "3×3 filter on a 7×7 input with
            stride 3 doesn't fit"). PyTorch never raises here: it floors, and the last
            ``remainder(i, k, s, p, d)`` rows/columns of the padded input are never read.

    Raises:
        TypeError: for a non-integer argument (a bool or a float included).
        ValueError: for an out-of-range argument, when the (dilated) kernel is
            larger than the padded input (``k̂ > i + 2p``; PyTorch raises too), or, with
            ``strict=True``, when the stride does not fit.
    """
    i, k, s, p, d = _check_conv(i, k, s, p, d)
    kh = effective_kernel_size(k, d)
    span = i + 2 * p - kh  # how far the kernel can travel inside the padded input
    if span < 0:
        raise ValueError(
            f"kernel does not fit in the padded input: effective kernel size k̂ = {kh} "
            f"(k={k}, d={d}) is larger than i + 2p = {i} + 2·{p} = {i + 2 * p}")
    if strict and span % s:
        raise ValueError(
            f"stride {s} does not fit: (i + 2p − k̂)/s = ({i} + 2·{p} − {kh})/{s} = {span / s:.4g} "
            f"is not an integer; PyTorch floors it to {span // s} (output {span // s + 1}) and "
            f"ignores the last {span % s} row(s)/column(s) of the padded input")
    return span // s + 1


def remainder(i: int, k: int, s: int = 1, p: int = 0, d: int = 1) -> int:
    """(i + 2p − k̂) mod s: padded-input rows/columns that no window reaches.

    0 exactly when the stride fits. The same number is the output padding ``a`` a transposed
    convolution needs to map the output of this convolution back to size ``i`` (D&V rel. 14),
    see ``transposed_output_padding``.
    """
    i, k, s, p, d = _check_conv(i, k, s, p, d)
    conv_output_size(i, k, s, p, d)  # raises if the kernel does not fit
    return (i + 2 * p - effective_kernel_size(k, d)) % s


def fits(i: int, k: int, s: int = 1, p: int = 0, d: int = 1) -> bool:
    """True when the kernel tiles the padded input exactly: (i + 2p − k̂)/s is an integer.

    ``fits(7, 3, s=2)`` is True (output 3), ``fits(7, 3, s=3)`` is False (2.33 windows).
    Raises TypeError / ValueError like ``conv_output_size`` when the configuration is invalid.
    """
    return remainder(i, k, s, p, d) == 0


def same_padding(k: int, d: int = 1) -> int:
    """Padding that keeps the size at stride 1 ("half"/"same" padding, D&V rel. 3): (k̂ − 1)/2.

    The slides' rule "zero-pad with (F − 1)/2": F = 3 → 1, F = 5 → 2, F = 7 → 3.

    Raises:
        ValueError: if k̂ is even: then no symmetric padding preserves the size
            (i + 2p − k̂ + 1 = i needs 2p = k̂ − 1).
    """
    kh = effective_kernel_size(k, d)
    if kh % 2 == 0:
        raise ValueError(f"same padding needs an odd effective kernel size, got k̂ = {kh} (k={k}, d={d}); "
                         f"2p = k̂ − 1 = {kh - 1} has no integer solution")
    return (kh - 1) // 2


def full_padding(k: int, d: int = 1) -> int:
    """Padding p = k̂ − 1 at which every partial overlap is computed (D&V rel. 4): o = i + k̂ − 1."""
    return effective_kernel_size(k, d) - 1


# --------------------------------------------------------------------------- pooling

def pool_output_size(i: int, k: int, s: int | None = None, p: int = 0, d: int = 1, *,
                     ceil_mode: bool = False) -> int:
    """Output size of max/average pooling along one axis (D&V relationship 7).

        o = ⌊(i + 2p − k̂) / s⌋ + 1   (⌈·⌉ with ``ceil_mode``)

    Pooling has no parameters and the same arithmetic as a convolution; ``s`` defaults to ``k``
    as in ``torch.nn.MaxPool2d`` (so 2×2 pooling halves the size). Two PyTorch rules apply:
    the padding may be at most half the kernel, p ≤ ⌊k/2⌋ (the undilated k: ATen's
    ``pool2d_shape_check``), and with ``ceil_mode`` a last window that would start inside the
    right padding is dropped (ATen's ``pooling_output_shape``).

    Raises:
        TypeError: for a non-integer argument.
        ValueError: for an out-of-range argument, p > ⌊k/2⌋, or a window larger than the padded input.
    """
    s = k if s is None else s
    i, k, s, p, d = _check_conv(i, k, s, p, d)
    kh = effective_kernel_size(k, d)
    if p > k // 2:
        raise ValueError(f"pooling padding must be at most half the kernel size, "
                         f"p ≤ ⌊k/2⌋ = ⌊{k}/2⌋ = {k // 2}, got p = {p}")
    span = i + 2 * p - kh
    o = (span + (s - 1 if ceil_mode else 0)) // s + 1  # floor division rounds towards −∞
    if ceil_mode and (o - 1) * s >= i + p:  # the last window would start in the right padding
        o -= 1
    if o < 1:
        raise ValueError(f"pooling window does not fit: effective kernel size k̂ = {kh} (k={k}, d={d}) "
                         f"is larger than i + 2p = {i} + 2·{p} = {i + 2 * p}, output size would be {o}")
    return o


# --------------------------------------------------------------------------- transposed

def transposed_output_size(i: int, k: int, s: int = 1, p: int = 0, d: int = 1,
                           output_padding: int = 0) -> int:
    """Output size of a transposed convolution along one axis (D&V relationships 8–14).

        o' = s(i' − 1) + a + k̂ − 2p

    where ``i`` here is the transposed convolution's input size i' and ``a = output_padding``.
    It is the input size of the direct convolution (k, s, p, d) whose output size is i'.
    Because that convolution floors, s different input sizes give the same output size;
    ``a`` ∈ {0, …, s − 1} picks one of them (``transposed_output_padding``).

    PyTorch (``nn.ConvTranspose2d``) accepts ``0 ≤ a < max(s, d)``. For o' < 1 it raises
    "Output size is too small", except that some of its code paths return an empty tensor
    for o' = 0; this function always raises.

    Raises:
        TypeError: for a non-integer argument.
        ValueError: for an out-of-range argument, ``output_padding`` not below the stride or the
            dilation, or an output size below 1 (padding larger than what it crops).
    """
    i, k, s, p, d = _check_conv(i, k, s, p, d)
    a = _check_int("output_padding a", output_padding, 0)
    if a >= max(s, d):
        raise ValueError(f"output_padding must be smaller than the stride or the dilation, "
                         f"max(s, d) = {max(s, d)}, got a = {a}")
    o = s * (i - 1) + a + effective_kernel_size(k, d) - 2 * p
    if o < 1:
        raise ValueError(f"transposed convolution output size s(i − 1) + a + k̂ − 2p = "
                         f"{s}·({i} − 1) + {a} + {effective_kernel_size(k, d)} − 2·{p} = {o} is below 1; "
                         f"reduce the padding p")
    return o


def transposed_output_padding(i: int, k: int, s: int = 1, p: int = 0, d: int = 1) -> int:
    """The output padding a = (i + 2p − k̂) mod s that makes a transposed convolution with the
    same (k, s, p, d) map ``conv_output_size(i, ...)`` back to exactly ``i``.

    Example: with k = 3, s = 2, p = 1 both i = 7 and i = 8 give o = 4; going back up from 4
    gives 7 with a = 0 and 8 with a = 1.
    """
    return remainder(i, k, s, p, d)


class StretchedConv(NamedTuple):
    """A transposed convolution written as a direct, unit-stride convolution (D&V §4).

    The input of size i' is *stretched* by inserting s − 1 zeros between neighbours
    (size ``stretched`` = i' + (i' − 1)(s − 1)), padded with ``pad_before`` zeros before and
    ``pad_after`` = pad_before + a zeros after, then convolved with the flipped kernel at
    stride 1 and dilation d. pad_before = k̂ − 1 − p (negative means crop).
    """

    stretched: int
    pad_before: int
    pad_after: int
    kernel: int
    dilation: int
    output: int


def transposed_as_conv(i: int, k: int, s: int = 1, p: int = 0, d: int = 1,
                       output_padding: int = 0) -> StretchedConv:
    """The direct convolution equivalent to a transposed convolution (see ``StretchedConv``).

    Its output size, ``conv_output_size(stretched + pad_before + pad_after, k, 1, 0, d)``,
    equals ``transposed_output_size(i, k, s, p, d, output_padding)``; the tests check both
    the sizes and the values against ``torch.nn.functional.conv_transpose2d``.
    """
    o = transposed_output_size(i, k, s, p, d, output_padding)  # validates
    kh = effective_kernel_size(k, d)
    stretched = i + (i - 1) * (s - 1)
    before = kh - 1 - p
    after = before + output_padding
    return StretchedConv(stretched, before, after, k, d, o)


# --------------------------------------------------------------------------- receptive field

class Layer(NamedTuple):
    """One spatial layer for ``receptive_field``: kernel k, stride s, padding p, dilation d."""

    k: int
    s: int = 1
    p: int = 0
    d: int = 1


class ReceptiveField(NamedTuple):
    """Receptive field after a layer, in input pixels.

    size: side of the window of input pixels that one output unit depends on.
    jump: distance in input pixels between neighbouring output units (product of strides).
    start: input coordinate of the centre of output unit 0's window (may be negative or
        fractional: padding moves it left of pixel 0, even kernels put it between pixels).
        Output unit u's window is [start + u·jump − (size − 1)/2, start + u·jump + (size − 1)/2].
    """

    size: int
    jump: int
    start: float


_POINTWISE = ("ReLU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Tanh", "ELU", "Identity",
              "BatchNorm1d", "BatchNorm2d", "Dropout", "Dropout2d", "Softmax", "LogSoftmax")


def _axis(value, name: str, axis: int) -> int:
    """One axis of a layer's size attribute: an int is the same along every axis, and so is a
    1-tuple (a 1-d layer, e.g. ``nn.Conv1d(..., 3).kernel_size == (3,)``); a longer tuple (2-d:
    ``(h, w)``, 3-d: ``(d, h, w)``) is indexed by ``axis``."""
    if isinstance(value, str):
        raise ValueError(f"{name} must be an int or a tuple of ints, got the string {value!r} "
                         f"(use same_padding(k) for 'same')")
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            return int(value[0])
        if not 0 <= axis < len(value):
            raise ValueError(f"axis must be in 0..{len(value) - 1} for a layer whose {name} is {value!r}, got {axis}")
        return int(value[axis])
    return int(value)


def _as_layers(layers, axis: int = 0) -> list[Layer]:
    """Normalise tuples, ``Layer``s, dicts and ``torch.nn`` modules to a list of ``Layer``."""
    try:
        import torch.nn as nn
    except ImportError:  # pragma: no cover
        nn = None
    if nn is not None and isinstance(layers, nn.Module):  # a Sequential is walked, other modules are one layer
        layers = list(layers) if isinstance(layers, nn.Sequential) else [layers]
    out: list[Layer] = []
    for item in layers:
        if nn is not None and isinstance(item, nn.Module):
            name = type(item).__name__
            if isinstance(item, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                                 nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
                dilation = getattr(item, "dilation", 1)  # average pooling has none
                out.append(Layer(*(_axis(v, attr, axis) for v, attr in (
                    (item.kernel_size, "kernel_size"), (item.stride, "stride"), (item.padding, "padding"),
                    (dilation, "dilation")))))
            elif isinstance(item, nn.Sequential):
                out.extend(_as_layers(item, axis))
            elif name in _POINTWISE:
                continue  # acts pixel by pixel: receptive field unchanged
            else:
                raise ValueError(f"receptive_field does not know how {name} changes the receptive field; "
                                 f"pass (k, s, p, d) tuples instead")
        elif isinstance(item, dict):
            out.append(Layer(**item))
        elif isinstance(item, (tuple, list)) and 1 <= len(item) <= 4:
            out.append(Layer(*item))
        else:
            raise ValueError(f"a layer must be a (k, s, p, d) tuple, a Layer, a dict or a torch.nn "
                             f"conv/pool module, got {item!r}")
    for layer in out:
        _check_conv(1, layer.k, layer.s, layer.p, layer.d)
    return out


def receptive_field_trace(layers: Iterable, axis: int = 0) -> list[ReceptiveField]:
    """Receptive field after each layer of a stack (Araujo et al., Distill 2019).

        r_l = r_{l−1} + (k̂_l − 1)·j_{l−1},   j_l = j_{l−1}·s_l,
        start_l = start_{l−1} + ((k̂_l − 1)/2 − p_l)·j_{l−1},   r_0 = j_0 = 1, start_0 = 0

    Args:
        layers: (k, s, p, d) tuples / ``Layer`` / dicts, or ``torch.nn`` conv and pooling
            modules, or an ``nn.Sequential`` of them (walked in order, nested ones too).
            Pointwise layers such as ReLU and BatchNorm are skipped; anything else (Linear,
            ConvTranspose2d, a custom module) raises, rather than being guessed at.
            1-d, 2-d and 3-d layers (``nn.Conv1d`` … ``nn.AvgPool3d``) are all accepted.
        axis: which spatial axis of the modules' sizes to follow: for 2-d layers 0 is the
            height and 1 the width, for 3-d layers 0, 1, 2 are depth, height, width; 1-d layers
            (and sizes given as one int) are the same along every axis.

    Returns:
        one ``ReceptiveField`` per spatial layer, in order.
    """
    _checks.non_negative_int(axis=axis)
    r, j, start = 1, 1, 0.0
    trace = []
    for layer in _as_layers(layers, axis):
        kh = effective_kernel_size(layer.k, layer.d)
        r, start = r + (kh - 1) * j, start + ((kh - 1) / 2 - layer.p) * j
        j = j * layer.s
        trace.append(ReceptiveField(r, j, start))
    return trace


def receptive_field(layers: Iterable, axis: int = 0) -> int:
    """Side of the input window one output unit of a stack of layers sees (1 for no layers).

    Three 3×3 convolutions at stride 1 see 7×7, like one 7×7 convolution:
    ``receptive_field([(3,), (3,), (3,)]) == 7``.
    """
    trace = receptive_field_trace(layers, axis)
    return trace[-1].size if trace else 1


# --------------------------------------------------------------------------- parameters

def conv_params(in_channels: int, out_channels: int, k: int | tuple[int, int], bias: bool = True, *,
                groups: int = 1) -> int:
    """Number of learnable parameters of a convolution (also of its transposed version).

        weights = out_channels · (in_channels / groups) · k_h · k_w,   biases = out_channels

    The slide's example: ten 5×5 filters over 3 channels have 10·(5·5·3 + 1) = 760 parameters.
    Independent of the image size: the same filters are shared across all positions. Pooling
    layers have none. ``k``: the kernel size, an int or ``(k_h, k_w)``.

    Raises:
        TypeError: for a size that is not an integer. ValueError: for a size below 1, or
            channels not divisible by ``groups``.
    """
    cin = _check_int("in_channels", in_channels, 1)
    cout = _check_int("out_channels", out_channels, 1)
    g = _check_int("groups", groups, 1)
    if isinstance(k, (tuple, list)) and len(k) != 2:
        raise ValueError(f"k must be an int or a pair (k_h, k_w), got {k!r}")
    kh, kw = (k, k) if not isinstance(k, (tuple, list)) else tuple(k)
    kh, kw = _check_int("kernel height", kh, 1), _check_int("kernel width", kw, 1)
    if cin % g or cout % g:
        raise ValueError(f"in_channels ({cin}) and out_channels ({cout}) must both be divisible by groups ({g})")
    return cout * (cin // g) * kh * kw + (cout if bias else 0)


def predict_shape(layer, shape: Sequence[int]) -> tuple[int, ...]:
    """Shape a ``torch.nn`` layer (or ``nn.Sequential``) will produce, from the formulas above.

    Args:
        layer: ``nn.Conv2d``, ``nn.ConvTranspose2d``, ``nn.MaxPool2d``, ``nn.AvgPool2d``,
            a pointwise layer (ReLU, BatchNorm2d, ...), or an ``nn.Sequential`` of those.
        shape: ``[N, C, H, W]`` or ``[C, H, W]``.

    Returns:
        the output shape, same length as ``shape``. Nothing is run.
    """
    import torch.nn as nn

    shape = tuple(int(v) for v in shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"shape must be [N, C, H, W] or [C, H, W], got {shape}")
    *lead, c, h, w = shape
    if isinstance(layer, nn.Sequential):
        for sub in layer:
            shape = predict_shape(sub, shape)
        return shape
    hw = []
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        if c != layer.in_channels:
            raise ValueError(f"{type(layer).__name__} expects {layer.in_channels} input channels, got shape {shape}")
        if isinstance(layer.padding, str):
            raise ValueError(f"padding={layer.padding!r} is not supported here; use same_padding(k)")
        for ax, size in enumerate((h, w)):
            args = (size, layer.kernel_size[ax], layer.stride[ax], layer.padding[ax], layer.dilation[ax])
            if isinstance(layer, nn.ConvTranspose2d):
                hw.append(transposed_output_size(*args, output_padding=layer.output_padding[ax]))
            else:
                hw.append(conv_output_size(*args))
        c = layer.out_channels
    elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        for ax, size in enumerate((h, w)):
            k, s = _axis(layer.kernel_size, "kernel_size", ax), _axis(layer.stride, "stride", ax)
            d = _axis(layer.dilation, "dilation", ax) if isinstance(layer, nn.MaxPool2d) else 1
            hw.append(pool_output_size(size, k, s, _axis(layer.padding, "padding", ax), d,
                                       ceil_mode=layer.ceil_mode))
    elif type(layer).__name__ in _POINTWISE:
        hw = [h, w]
    else:
        raise ValueError(f"predict_shape does not know {type(layer).__name__}")
    return (*lead, c, *hw)


# --------------------------------------------------------------------------- text

def describe(i: int, k: int, s: int = 1, p: int = 0, d: int = 1, *, transposed: bool = False,
             output_padding: int = 0) -> str:
    """The arithmetic for one configuration, written out with its numbers (used by the explorer)."""
    kh = effective_kernel_size(k, d)
    dil = f", k̂ = k + (k−1)(d−1) = {kh}" if d > 1 else ""
    if transposed:
        o = transposed_output_size(i, k, s, p, d, output_padding)
        eq = transposed_as_conv(i, k, s, p, d, output_padding)
        return (f"transposed conv: i'={i}, k={k}, s={s}, p={p}, d={d}, a={output_padding}{dil}\n"
                f"o' = s(i'−1) + a + k̂ − 2p = {s}·{i - 1} + {output_padding} + {kh} − {2 * p} = {o}\n"
                f"= a stride-1 conv over the input stretched to {eq.stretched} "
                f"(s−1 = {s - 1} zeros between pixels), padded {eq.pad_before} before / {eq.pad_after} after")
    o = conv_output_size(i, k, s, p, d)
    span = i + 2 * p - kh
    fit = "fits" if span % s == 0 else f"does NOT fit: {span}/{s} = {span / s:.2f}, PyTorch floors"
    return (f"conv: i={i}, k={k}, s={s}, p={p}, d={d}{dil}\n"
            f"o = ⌊(i + 2p − k̂)/s⌋ + 1 = ⌊({i} + {2 * p} − {kh})/{s}⌋ + 1 = {o}   (stride {fit})")
