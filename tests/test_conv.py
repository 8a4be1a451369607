"""cvdl.conv against its references: F.conv2d, scipy.signal, skimage.feature.hog, and the slides."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from cvdl import conv

# ----------------------------------------------------------------------------------------------
# The slides' numbers (typed in from the lecture, never produced by cvdl)
# ----------------------------------------------------------------------------------------------

# "The Convolution Operation" (MIT 6.S191, 2019, lecture 3): the 5×5 image, the 3×3 filter and the
# 3×3 feature map the animation ends on. The shared slide text carries the image; the filter and
# the feature map are in the slide graphics (the same example is Stanford UFLDL's "Feature
# extraction using convolution").
SLIDE_IMAGE = [[1, 1, 1, 0, 0],
               [0, 1, 1, 1, 0],
               [0, 0, 1, 1, 1],
               [0, 0, 1, 1, 0],
               [0, 1, 1, 0, 0]]
SLIDE_FILTER = [[1, 0, 1],
                [0, 1, 0],
                [1, 0, 1]]
SLIDE_FEATURE_MAP = [[4, 3, 4],
                     [2, 4, 3],
                     [2, 3, 4]]

# "Filters to Detect X Features": the three ±1 filters, as printed on the slide.
SLIDE_X_FILTERS = [[[1, -1, -1], [-1, 1, -1], [-1, -1, 1]],
                   [[1, -1, 1], [-1, 1, -1], [1, -1, 1]],
                   [[-1, -1, 1], [-1, 1, -1], [1, -1, -1]]]

# "X or X?": the second (shifted, rotated, deformed) X, as printed on the slide.
SLIDE_X_DISTORTED = [[-1, -1, -1, -1, -1, -1, -1, -1, -1],
                     [-1, -1, -1, -1, -1, -1, -1, 1, -1],
                     [-1, 1, -1, -1, -1, -1, 1, -1, -1],
                     [-1, -1, 1, 1, -1, -1, 1, -1, -1],
                     [-1, -1, -1, -1, 1, 1, -1, 1, -1],
                     [-1, -1, -1, -1, -1, 1, -1, -1, -1],
                     [-1, -1, -1, 1, -1, -1, 1, 1, -1],
                     [-1, -1, -1, 1, -1, -1, -1, -1, 1],
                     [-1, -1, -1, -1, -1, -1, -1, -1, -1]]


def test_slide_constants_are_the_slides():
    np.testing.assert_array_equal(conv.SLIDE_IMAGE, SLIDE_IMAGE)
    np.testing.assert_array_equal(conv.SLIDE_FILTER, SLIDE_FILTER)
    np.testing.assert_array_equal(conv.X_FILTERS, SLIDE_X_FILTERS)
    np.testing.assert_array_equal(conv.x_images()[1], SLIDE_X_DISTORTED)


def test_slide_5x5_example_number_for_number():
    out = conv.correlate2d_loops(SLIDE_IMAGE, SLIDE_FILTER)
    np.testing.assert_array_equal(out, SLIDE_FEATURE_MAP)
    x = torch.tensor(SLIDE_IMAGE, dtype=torch.float64)[None, None]
    w = torch.tensor(SLIDE_FILTER, dtype=torch.float64)[None, None]
    np.testing.assert_array_equal(conv.conv2d(x, w)[0, 0].numpy(), SLIDE_FEATURE_MAP)


def test_reference_x_is_an_x():
    ref, _ = conv.x_images()
    assert ref.shape == (9, 9)
    assert set(np.unique(ref)) == {-1.0, 1.0}
    # +1 exactly on the two diagonals of the inner 7×7, nowhere else
    ink = {(int(r), int(c)) for r, c in zip(*np.nonzero(ref == 1))}
    expected = {(i, i) for i in range(1, 8)} | {(i, 8 - i) for i in range(1, 8)}
    assert ink == expected


def test_x_filters_feature_maps_count_matching_pixels():
    """For ±1 images and ±1 filters, Σ w·x = (#agree) − (#disagree) = 9 − 2·#disagree."""
    for image in conv.x_images():
        for f in conv.X_FILTERS:
            out = conv.correlate2d_loops(image, f)
            assert out.shape == (7, 7)
            for i in range(7):
                for j in range(7):
                    disagree = int(np.sum(image[i:i + 3, j:j + 3] != f))
                    assert out[i, j] == 9 - 2 * disagree


def test_x_filters_fire_where_the_stroke_matches():
    ref, _ = conv.x_images()
    diag, cross, anti = (conv.correlate2d_loops(ref, f) for f in conv.X_FILTERS)
    # the "\" filter matches the "\" stroke exactly at (1,1), (2,2), (4,4), (5,5); at the centre
    # (3,3) the patch is the small x, which disagrees with "\" in two corners: 9 − 2·2 = 5
    assert [diag[i, i] for i in range(7)] == [7, 9, 9, 5, 9, 9, 7]
    assert cross[3, 3] == 9 and np.sum(cross == 9) == 1
    np.testing.assert_array_equal(anti, diag[:, ::-1])       # the X is mirror-symmetric


# ----------------------------------------------------------------------------------------------
# Loops vs vectorised vs references
# ----------------------------------------------------------------------------------------------

def _random_case(rng: np.random.Generator):
    n, c, o = rng.integers(1, 4), rng.integers(1, 5), rng.integers(1, 5)
    kh, kw = rng.integers(1, 6, size=2)
    sh, sw = rng.integers(1, 4, size=2)
    ph, pw = rng.integers(0, 3, size=2)
    dh, dw = rng.integers(1, 4, size=2)
    h = int(dh * (kh - 1) + 1 - 2 * ph + rng.integers(0, 9))    # always at least one output
    w = int(dw * (kw - 1) + 1 - 2 * pw + rng.integers(0, 9))
    h, w = max(h, 1), max(w, 1)
    kw_args = dict(stride=(int(sh), int(sw)), padding=(int(ph), int(pw)), dilation=(int(dh), int(dw)))
    x = torch.from_numpy(rng.standard_normal((n, c, h, w)))
    weight = torch.from_numpy(rng.standard_normal((o, c, kh, kw)))
    bias = torch.from_numpy(rng.standard_normal(o)) if rng.random() < 0.5 else None
    return x, weight, bias, kw_args


@pytest.mark.parametrize("seed", range(40))
def test_conv2d_matches_torch(seed):
    x, weight, bias, kw = _random_case(np.random.default_rng(seed))
    ours = conv.conv2d(x, weight, bias, **kw)
    ref = F.conv2d(x, weight, bias, **kw)
    assert ours.shape == ref.shape
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_conv2d_int_arguments_and_float32():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((2, 3, 17, 12)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal((5, 3, 3, 3)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(5).astype(np.float32))
    for s, p, d in [(1, 0, 1), (2, 1, 1), (3, 2, 2), (1, 1, 3)]:
        ref = F.conv2d(x, w, b, stride=s, padding=p, dilation=d)
        torch.testing.assert_close(conv.conv2d(x, w, b, stride=s, padding=p, dilation=d), ref,
                                   rtol=1e-4, atol=1e-4)


def test_conv2d_numpy_input_and_gradients_flow():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 6, 6))
    w = torch.from_numpy(rng.standard_normal((3, 2, 3, 3))).requires_grad_()
    out = conv.conv2d(x, w, padding=1)
    out.sum().backward()
    w_ref = w.detach().clone().requires_grad_()
    F.conv2d(torch.from_numpy(x), w_ref, padding=1).sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad)


@pytest.mark.parametrize("seed", range(15))
def test_loops_match_vectorised_and_scipy(seed):
    rng = np.random.default_rng(100 + seed)
    kh, kw = rng.integers(1, 5, size=2)
    h, w = int(kh + rng.integers(0, 8)), int(kw + rng.integers(0, 8))
    image, kernel = rng.standard_normal((h, w)), rng.standard_normal((kh, kw))
    bias = float(rng.standard_normal())
    stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
    padding = tuple(int(v) for v in rng.integers(0, 3, size=2))

    loops = conv.correlate2d_loops(image, kernel, bias=bias, stride=stride, padding=padding)
    vec = conv.conv2d(torch.from_numpy(image)[None, None], torch.from_numpy(kernel)[None, None],
                      torch.tensor([bias], dtype=torch.float64), stride=stride, padding=padding)[0, 0]
    np.testing.assert_allclose(loops, vec.numpy(), rtol=1e-12, atol=1e-12)

    # SciPy: 'valid' correlation of the zero-padded image, subsampled by the stride
    padded = np.pad(image, ((padding[0],) * 2, (padding[1],) * 2))
    ref = scipy.signal.correlate2d(padded, kernel, mode="valid")[::stride[0], ::stride[1]] + bias
    np.testing.assert_allclose(loops, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_true_convolution_matches_scipy(seed):
    rng = np.random.default_rng(200 + seed)
    kh, kw = rng.integers(1, 5, size=2)
    image = rng.standard_normal((int(kh + rng.integers(0, 7)), int(kw + rng.integers(0, 7))))
    kernel = rng.standard_normal((kh, kw))
    np.testing.assert_allclose(conv.convolve2d(image, kernel),
                               scipy.signal.convolve2d(image, kernel, mode="valid"), atol=1e-12)
    np.testing.assert_allclose(conv.convolve2d(image, kernel, padding=(int(kh) - 1, int(kw) - 1)),
                               scipy.signal.convolve2d(image, kernel, mode="full"), atol=1e-12)


def test_flip_matters_for_an_asymmetric_kernel():
    rng = np.random.default_rng(3)
    image = rng.standard_normal((8, 8))
    kernel = np.arange(9.0).reshape(3, 3)                      # not symmetric under a 180° turn
    corr, true = conv.correlate2d_loops(image, kernel), conv.convolve2d(image, kernel)
    assert np.abs(corr - true).max() > 1e-3
    np.testing.assert_allclose(true, conv.correlate2d_loops(image, kernel[::-1, ::-1]), atol=1e-12)


def test_named_kernels():
    k = conv.KERNELS
    assert set(k) == {"identity", "sharpen", "edge", "strong_edge"}
    for name, v in k.items():
        assert v.shape == (3, 3), name
    np.testing.assert_array_equal(k["sharpen"], k["identity"] + k["edge"])
    # edge detectors ignore flat regions (weights sum to 0); identity and sharpen keep brightness
    assert k["edge"].sum() == 0 and k["strong_edge"].sum() == 0
    assert k["identity"].sum() == 1 and k["sharpen"].sum() == 1
    rng = np.random.default_rng(4)
    image = rng.standard_normal((7, 9))
    np.testing.assert_allclose(conv.correlate2d_loops(image, k["identity"], padding=1), image)
    np.testing.assert_allclose(conv.correlate2d_loops(np.full((5, 5), 3.0), k["strong_edge"]), 0.0)


# ----------------------------------------------------------------------------------------------
# HOG cells against skimage.feature.hog
# ----------------------------------------------------------------------------------------------

def _skimage_cells(image, orientations, cell):
    """skimage's HOG with 1×1-cell blocks and L1 normalisation: per-cell histogram / (L1 + 1e-5)."""
    from skimage.feature import hog

    out = hog(image, orientations=orientations, pixels_per_cell=(cell, cell), cells_per_block=(1, 1),
              block_norm="L1", feature_vector=False)              # [n_r, n_c, 1, 1, orientations]
    return out[:, :, 0, 0, :]


@pytest.mark.parametrize("shape,orientations,cell", [((40, 37), 9, 8), ((33, 50), 9, 7),
                                                     ((24, 24), 6, 4), ((31, 29), 12, 5)])
def test_hog_cells_match_skimage(shape, orientations, cell):
    image = np.random.default_rng(5).random(shape)
    ours = conv.hog_cell_histograms(image, orientations=orientations, cell=cell)
    assert ours.shape == (shape[0] // cell, shape[1] // cell, orientations)
    ours_normed = ours / (np.abs(ours).sum(-1, keepdims=True) + 1e-5)
    # skimage accumulates each cell in float32, hence the tolerance
    np.testing.assert_allclose(ours_normed, _skimage_cells(image, orientations, cell), rtol=1e-5, atol=1e-6)


def test_hog_cells_bin_edges_match_skimage():
    """Gradients at exactly 0°, 45°, 90°, 135° land on bin edges when there are 4 bins."""
    r, c = np.mgrid[0:32, 0:32].astype(np.float64)
    image = np.where((r // 8 + c // 8) % 2 == 0, r + c, r - c) + 5 * (r > 16) + 3 * (c > 20)
    ours = conv.hog_cell_histograms(image, orientations=4, cell=8)
    assert np.count_nonzero(ours) > 0
    ours_normed = ours / (np.abs(ours).sum(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(ours_normed, _skimage_cells(image, 4, 8), rtol=1e-5, atol=1e-6)


def test_hog_vertical_edge_votes_horizontal_gradient():
    image = np.zeros((16, 16))
    image[:, 8:] = 1.0                                          # dark | bright: gradient along columns
    hist = conv.hog_cell_histograms(image, orientations=9, cell=8)
    assert hist[..., 1:].sum() == 0 and hist[..., 0].sum() > 0     # every vote in the 0°–20° bin


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

def test_conv2d_errors_say_what_was_expected():
    x, w = torch.zeros(1, 3, 8, 8), torch.zeros(2, 3, 3, 3)
    with pytest.raises(ValueError, match=r"4-D \[N, C, H, W\].*\(3, 8, 8\)"):
        conv.conv2d(torch.zeros(3, 8, 8), w)
    with pytest.raises(ValueError, match=r"4-D \[O, C, kh, kw\].*\(3, 3\)"):
        conv.conv2d(x, torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"expects 2 input channels.*x has 3"):
        conv.conv2d(x, torch.zeros(2, 2, 3, 3))
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\).*\(3,\)"):
        conv.conv2d(x, w, torch.zeros(3))
    with pytest.raises(ValueError, match=r"along the height axis: .*k̂ = 9 \(k=9, d=1\) is larger than i \+ 2p = 8"):
        conv.conv2d(x, torch.zeros(2, 3, 9, 3))
    with pytest.raises(ValueError, match=r"along the width axis: .*k̂ = 9 \(k=3, d=4\) is larger than i \+ 2p = 8"):
        conv.conv2d(x, w, dilation=(1, 4))
    conv.conv2d(x, torch.zeros(2, 3, 9, 3), padding=1)          # fits once padded
    with pytest.raises(ValueError, match=r"stride must be positive.*0"):
        conv.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match=r"stride must be positive.*-1"):
        conv.conv2d(x, w, stride=(1, -1))
    with pytest.raises(ValueError, match=r"dilation must be positive"):
        conv.conv2d(x, w, dilation=0)
    with pytest.raises(ValueError, match=r"padding must be non-negative.*-1"):
        conv.conv2d(x, w, padding=-1)
    with pytest.raises(ValueError, match=r"stride must be an int or a pair of ints.*1.5"):
        conv.conv2d(x, w, stride=1.5)


def test_loop_and_hog_errors():
    with pytest.raises(ValueError, match=r"image must be 2-D \[H, W\].*\(1, 5, 5\)"):
        conv.correlate2d_loops(np.zeros((1, 5, 5)), np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"kernel must be 2-D"):
        conv.correlate2d_loops(np.zeros((5, 5)), np.ones(3))
    with pytest.raises(ValueError, match=r"along the height axis: .*k̂ = 6 \(k=6, d=1\) is larger than i \+ 2p = 5"):
        conv.correlate2d_loops(np.zeros((5, 5)), np.ones((6, 1)))
    with pytest.raises(ValueError, match=r"stride must be positive"):
        conv.correlate2d_loops(np.zeros((5, 5)), np.ones((3, 3)), stride=0)
    with pytest.raises(ValueError, match=r"kernel must be 2-D"):
        conv.convolve2d(np.zeros((5, 5)), np.ones((1, 3, 3)))
    with pytest.raises(ValueError, match=r"2-D \[H, W\] \(grey\).*\(8, 8, 3\)"):
        conv.hog_cell_histograms(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match=r"smaller than one 8×8 cell"):
        conv.hog_cell_histograms(np.zeros((7, 20)))
