"""Convolution from scratch: the loops, the vectorised layer, the flip, and HOG's first stage.

What deep-learning libraries call "convolution" (``torch.nn.Conv2d``, ``F.conv2d``) is, in
signal-processing terms, **cross-correlation**: the filter slides over the image and at every
position we take Σ w·x over the window, *without* flipping the filter::

    cross-correlation   out[i, j] = Σ_u Σ_v  w[u, v] · x[i + u, j + v]
    true convolution    out[i, j] = Σ_u Σ_v  w[u, v] · x[i - u, j - v]
                                  = cross-correlation of x with w flipped in both axes

For a learned filter the difference does not matter (the network would simply learn the flipped
filter), so CNNs skip the flip. SciPy keeps the two apart: ``scipy.signal.correlate2d`` is what
:func:`correlate2d_loops` computes, ``scipy.signal.convolve2d`` is what :func:`convolve2d` computes.

Contents, in teaching order:

- :data:`KERNELS` — identity, sharpen, edge detect, "strong" edge detect (the slide's feature maps)
- :data:`SLIDE_IMAGE`, :data:`SLIDE_FILTER` — the lecture's 5×5 image ⊛ 3×3 filter example
- :data:`X_FILTERS`, :func:`x_images` — the "X or X?" ±1 case study
- :func:`correlate2d_loops` — one channel, plain Python loops: out = Σ w·x (+ b) per position
- :func:`convolve2d` — the true (flipped) convolution, for comparison with SciPy
- :func:`conv2d` — vectorised, batched, multi-channel, with stride, padding, dilation and bias:
  ``[N,C,H,W] ⊛ [O,C,kh,kw] → [N,O,H',W']``, the same contract as ``F.conv2d``
- :func:`hog_cell_histograms` — HOG's gradient-orientation histograms per cell (checked against
  ``skimage.feature.hog`` in ``tests/test_conv.py``)

Output size along one axis (input ``n``, kernel ``k``, stride ``s``, padding ``p``, dilation ``d``),
computed by :func:`cvdl.arith.conv_output_size`::

    n_out = floor((n + 2p - d·(k - 1) - 1) / s) + 1
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from .arith import conv_output_size, effective_kernel_size

IntPair = Union[int, tuple[int, int]]

# ----------------------------------------------------------------------------------------------
# The slides' numbers
# ----------------------------------------------------------------------------------------------

#: Named 3×3 kernels for the "Producing Feature Maps" slide (Original, Sharpen, Edge Detect,
#: "Strong" Edge Detect). The slide names them and shows their effect on a photo; the values are
#: those of the table in Wikipedia's "Kernel (image processing)", where the slide's pictures come
#: from. Note ``sharpen == identity + edge``: sharpening adds the edges back onto the image.
KERNELS: dict[str, np.ndarray] = {
    "identity": np.array([[0, 0, 0],
                          [0, 1, 0],
                          [0, 0, 0]], dtype=np.float64),
    "sharpen": np.array([[0, -1, 0],
                         [-1, 5, -1],
                         [0, -1, 0]], dtype=np.float64),
    "edge": np.array([[0, -1, 0],
                      [-1, 4, -1],
                      [0, -1, 0]], dtype=np.float64),
    "strong_edge": np.array([[-1, -1, -1],
                             [-1, 8, -1],
                             [-1, -1, -1]], dtype=np.float64),
}

#: The 5×5 binary image of the slide "The Convolution Operation" (MIT 6.S191, lecture 3).
SLIDE_IMAGE = np.array([[1, 1, 1, 0, 0],
                        [0, 1, 1, 1, 0],
                        [0, 0, 1, 1, 1],
                        [0, 0, 1, 1, 0],
                        [0, 1, 1, 0, 0]], dtype=np.float64)

#: The 3×3 filter slid over :data:`SLIDE_IMAGE` on the same slide (it is symmetric, so for this
#: example convolution and cross-correlation agree).
SLIDE_FILTER = np.array([[1, 0, 1],
                         [0, 1, 0],
                         [1, 0, 1]], dtype=np.float64)

#: The three ±1 filters of "Filters to Detect X Features": ``[3, 3, 3]`` — the "\" diagonal,
#: the small "x" crossing, and the "/" diagonal.
X_FILTERS = np.array([[[1, -1, -1],
                       [-1, 1, -1],
                       [-1, -1, 1]],
                      [[1, -1, 1],
                       [-1, 1, -1],
                       [1, -1, 1]],
                      [[-1, -1, 1],
                       [-1, 1, -1],
                       [1, -1, -1]]], dtype=np.float64)

X_FILTER_NAMES = ("diagonal \\", "crossing x", "diagonal /")

# The slide's second "X": shifted, shrunk, rotated and deformed (copied from the slide).
_X_DISTORTED = np.array([[-1, -1, -1, -1, -1, -1, -1, -1, -1],
                         [-1, -1, -1, -1, -1, -1, -1, 1, -1],
                         [-1, 1, -1, -1, -1, -1, 1, -1, -1],
                         [-1, -1, 1, 1, -1, -1, 1, -1, -1],
                         [-1, -1, -1, -1, 1, 1, -1, 1, -1],
                         [-1, -1, -1, -1, -1, 1, -1, -1, -1],
                         [-1, -1, -1, 1, -1, -1, 1, 1, -1],
                         [-1, -1, -1, 1, -1, -1, -1, -1, 1],
                         [-1, -1, -1, -1, -1, -1, -1, -1, -1]], dtype=np.float64)


def x_images() -> tuple[np.ndarray, np.ndarray]:
    """The two 9×9 images of the "X or X?" slide, pixels ±1 (+1 = ink).

    Returns ``(reference, distorted)``, each ``[9, 9]`` float64. The reference X has +1 on both
    diagonals of the inner 7×7 square; the distorted X is the slide's second image.
    """
    eye = np.eye(7, dtype=bool)
    ink = np.zeros((9, 9), dtype=bool)
    ink[1:8, 1:8] = eye | eye[:, ::-1]        # "\" and "/" strokes
    reference = np.where(ink, 1.0, -1.0)
    return reference, _X_DISTORTED.copy()


# ----------------------------------------------------------------------------------------------
# Argument checks shared by the functions below
# ----------------------------------------------------------------------------------------------

def _pair(value: IntPair, name: str, minimum: int) -> tuple[int, int]:
    """``3`` → ``(3, 3)``; ``(2, 1)`` stays; anything else, or a value below ``minimum``, raises."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        what = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{name} must be {what} (>= {minimum}), got {value!r}")
    return pair


def _out_size(n: int, k: int, stride: int, padding: int, dilation: int, axis: str) -> int:
    """Output length along one axis (:func:`cvdl.arith.conv_output_size`); its error, if the
    (dilated) kernel does not fit, names the axis and fills in the numbers."""
    try:
        return conv_output_size(n, k, stride, padding, dilation)
    except ValueError as err:
        raise ValueError(f"along the {axis} axis: {err}") from None


# ----------------------------------------------------------------------------------------------
# One channel, plain loops: the definition
# ----------------------------------------------------------------------------------------------

def correlate2d_loops(image, kernel, bias: float = 0.0, stride: IntPair = 1,
                      padding: IntPair = 0) -> np.ndarray:
    """Single-channel 2-D cross-correlation written as loops — what CNNs call convolution.

    Args:
        image: ``[H, W]`` array.
        kernel: ``[kh, kw]`` array (not flipped).
        bias: added to every output.
        stride: step of the sliding window, int or ``(sh, sw)``, each >= 1.
        padding: zeros added on every side, int or ``(ph, pw)``, each >= 0.

    Returns:
        ``[H', W']`` float64 with ``H' = (H + 2ph - kh) // sh + 1`` (same for ``W'``), where
        ``out[i, j] = Σ_u Σ_v kernel[u, v] · padded[i·sh + u, j·sw + v] + bias``.
    """
    image = np.asarray(image, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D [H, W], got shape {image.shape}")
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D [kh, kw], got shape {kernel.shape}")
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    kh, kw = kernel.shape
    out_h = _out_size(image.shape[0], kh, sh, ph, 1, "height")
    out_w = _out_size(image.shape[1], kw, sw, pw, 1, "width")

    padded = np.zeros((image.shape[0] + 2 * ph, image.shape[1] + 2 * pw))
    padded[ph:ph + image.shape[0], pw:pw + image.shape[1]] = image

    out = np.zeros((out_h, out_w))
    for i in range(out_h):                       # every output position ...
        for j in range(out_w):
            total = bias
            for u in range(kh):                  # ... is one neuron: Σ w·x over its window, + b
                for v in range(kw):
                    total += kernel[u, v] * padded[i * sh + u, j * sw + v]
            out[i, j] = total
    return out


def convolve2d(image, kernel, padding: IntPair = 0) -> np.ndarray:
    """True 2-D convolution (kernel flipped in both axes), single channel, stride 1.

    ``padding=0`` matches ``scipy.signal.convolve2d(image, kernel, mode="valid")`` and
    ``padding=(kh - 1, kw - 1)`` matches ``mode="full"``.

    Args:
        image: ``[H, W]``.  kernel: ``[kh, kw]``.
    Returns:
        ``[H + 2ph - kh + 1, W + 2pw - kw + 1]`` float64.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D [kh, kw], got shape {kernel.shape}")
    return correlate2d_loops(image, kernel[::-1, ::-1], padding=padding)


# ----------------------------------------------------------------------------------------------
# Vectorised: batched, multi-channel, stride / padding / dilation / bias
# ----------------------------------------------------------------------------------------------

def conv2d(x, weight, bias=None, stride: IntPair = 1, padding: IntPair = 0,
           dilation: IntPair = 1) -> torch.Tensor:
    """Batched multi-channel 2-D convolution (cross-correlation), the contract of ``F.conv2d``.

    Built as im2col: cut every receptive field out of the padded input as a column of
    ``C·kh·kw`` numbers, then one matrix product with the ``[O, C·kh·kw]`` filter matrix.

    Args:
        x: ``Tensor[N, C, H, W]`` (a NumPy array is converted).
        weight: ``Tensor[O, C, kh, kw]`` — ``O`` filters, each spanning all ``C`` input channels.
        bias: ``Tensor[O]`` or ``None``.
        stride, padding, dilation: int or ``(h, w)``; stride and dilation >= 1, padding >= 0
            (zero padding).

    Returns:
        ``Tensor[N, O, H', W']`` with
        ``H' = (H + 2·ph - dh·(kh - 1) - 1) // sh + 1`` (same for ``W'``) and
        ``out[n, o, i, j] = Σ_c Σ_u Σ_v weight[o, c, u, v] · x_pad[n, c, i·sh + u·dh, j·sw + v·dw] + bias[o]``.
    """
    x = torch.as_tensor(x)
    weight = torch.as_tensor(weight)
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D [O, C, kh, kw], got shape {tuple(weight.shape)}")
    n, c, h, w = x.shape
    o, c_w, kh, kw = weight.shape
    if c_w != c:
        raise ValueError(f"weight expects {c_w} input channels (weight shape {tuple(weight.shape)}) "
                         f"but x has {c} (x shape {tuple(x.shape)})")
    if bias is not None:
        bias = torch.as_tensor(bias)
        if bias.shape != (o,):
            raise ValueError(f"bias must have shape ({o},) — one per filter — got {tuple(bias.shape)}")
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    dh, dw = _pair(dilation, "dilation", 1)
    out_h = _out_size(h, kh, sh, ph, dh, "height")
    out_w = _out_size(w, kw, sw, pw, dw, "width")

    dtype = torch.promote_types(x.dtype, weight.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    x, weight = x.to(dtype), weight.to(device=x.device, dtype=dtype)

    xp = F.pad(x, (pw, pw, ph, ph))                                  # [N, C, H+2ph, W+2pw]
    span_h, span_w = effective_kernel_size(kh, dh), effective_kernel_size(kw, dw)  # dilated kernel extent
    # every window of the dilated extent, stepping by the stride (views, no copy)
    windows = xp.unfold(2, span_h, sh).unfold(3, span_w, sw)         # [N, C, H', W', span_h, span_w]
    windows = windows[..., ::dh, ::dw]                               # [N, C, H', W', kh, kw]
    cols = windows.permute(0, 2, 3, 1, 4, 5).reshape(n, out_h * out_w, c * kh * kw)  # im2col
    out = cols @ weight.reshape(o, c * kh * kw).T                    # [N, H'·W', O]
    if bias is not None:
        out = out + bias.to(out.device, dtype)
    return out.permute(0, 2, 1).reshape(n, o, out_h, out_w)          # [N, O, H', W']


# ----------------------------------------------------------------------------------------------
# HOG, first stage: gradient-orientation histograms per cell
# ----------------------------------------------------------------------------------------------

def hog_cell_histograms(image, orientations: int = 9, cell: int = 8) -> np.ndarray:
    """Per-cell histograms of unsigned gradient orientation, weighted by gradient magnitude.

    The first stage of HOG (Dalal & Triggs 2005), done the way ``skimage.feature.hog`` does it:
    gradients by central differences ``[-1, 0, 1]`` (zero on the image border), orientation
    ``atan2(g_row, g_col)`` in degrees mod 180, each pixel votes its magnitude into one of
    ``orientations`` equal bins over [0°, 180°), and each cell's sum is divided by its pixel count.
    Only whole cells are used. ``hog(..., cells_per_block=(1, 1), block_norm="L1")`` equals this
    divided by its per-cell L1 norm (+1e-5).

    Args:
        image: ``[H, W]`` grey image.
        orientations: number of bins over 180°.
        cell: cell side in pixels.

    Returns:
        ``[H // cell, W // cell, orientations]`` float64.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D [H, W] (grey), got shape {image.shape}")
    if not isinstance(orientations, (int, np.integer)) or orientations < 1:
        raise ValueError(f"orientations must be a positive int, got {orientations!r}")
    if not isinstance(cell, (int, np.integer)) or cell < 1:
        raise ValueError(f"cell must be a positive int, got {cell!r}")
    n_r, n_c = image.shape[0] // cell, image.shape[1] // cell
    if n_r == 0 or n_c == 0:
        raise ValueError(f"image {image.shape} is smaller than one {cell}×{cell} cell")

    g_row = np.zeros_like(image)
    g_col = np.zeros_like(image)
    g_row[1:-1, :] = image[2:, :] - image[:-2, :]                   # [-1, 0, 1] down the rows
    g_col[:, 1:-1] = image[:, 2:] - image[:, :-2]                   # [-1, 0, 1] along the columns
    magnitude = np.hypot(g_col, g_row)                              # [H, W]
    angle = np.rad2deg(np.arctan2(g_row, g_col)) % 180              # [H, W] in [0, 180]

    width = 180.0 / orientations
    hist = np.zeros((n_r, n_c, orientations))
    mag = magnitude[:n_r * cell, :n_c * cell].reshape(n_r, cell, n_c, cell)
    ang = angle[:n_r * cell, :n_c * cell].reshape(n_r, cell, n_c, cell)
    for b in range(orientations):
        in_bin = (ang >= width * b) & (ang < width * (b + 1))       # [n_r, cell, n_c, cell]
        hist[:, :, b] = (mag * in_bin).sum(axis=(1, 3)) / (cell * cell)
    return hist
