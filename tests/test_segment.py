"""cvdl.segment: the confusion matrix and IoU against scikit-learn, bilinear upsampling against
F.interpolate, the convolutionalised classifier against the classifier, the networks' shapes."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix as sk_confusion, jaccard_score

from cvdl import models, segment

torch.set_num_threads(1)


def maps(seed, shape=(3, 16, 16), k=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, k, shape, generator=g), torch.randint(0, k, shape, generator=g)


def test_confusion_matrix_and_iou_match_scikit_learn():
    for seed in range(5):
        pred, truth = maps(seed)
        conf = segment.confusion_matrix(pred, truth, 4)
        np.testing.assert_array_equal(conf.numpy(), sk_confusion(truth.flatten(), pred.flatten(), labels=range(4)))
        np.testing.assert_allclose(segment.iou_per_class(conf).numpy(),
                                   jaccard_score(truth.flatten(), pred.flatten(), labels=range(4), average=None))
        assert segment.mean_iou(pred, truth, 4) == pytest.approx(
            jaccard_score(truth.flatten(), pred.flatten(), labels=range(4), average="macro"))
        assert segment.pixel_accuracy(pred, truth) == pytest.approx((pred == truth).float().mean().item())


def test_a_class_absent_from_both_is_left_out_of_the_mean():
    truth = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    iou = segment.iou_per_class(segment.confusion_matrix(pred, truth, 3))
    assert iou[0] == pytest.approx(1 / 2) and iou[1] == pytest.approx(2 / 3) and math.isnan(iou[2])
    assert segment.mean_iou(pred, truth, 3) == pytest.approx((1 / 2 + 2 / 3) / 2)
    # a class in the prediction only scores 0, not NaN
    assert segment.iou_per_class(segment.confusion_matrix(torch.tensor([2, 0]), torch.tensor([0, 0]), 3))[2] == 0.0
    # ignored pixels count nowhere
    conf = segment.confusion_matrix(torch.tensor([1, 1, 0]), torch.tensor([255, 1, 0]), 2, ignore_index=255)
    assert conf.tolist() == [[1, 0], [0, 1]]
    assert math.isnan(segment.mean_iou(torch.zeros(0), torch.zeros(0), 2))


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        segment.confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match="outside 0 … 1"):
        segment.confusion_matrix(torch.tensor([2]), torch.tensor([0]), 2)
    with pytest.raises(ValueError, match=r"\[K, K\]"):
        segment.iou_per_class(torch.zeros(2, 3))


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_bilinear_upsampler_equals_interpolate_away_from_the_border(factor):
    x = torch.rand(2, 3, 7, 6, generator=torch.Generator().manual_seed(factor))
    up = segment.bilinear_upsampler(3, factor)
    got = up(x).detach()
    want = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert got.shape == want.shape == (2, 3, 7 * factor, 6 * factor)
    b = factor                                  # the outermost source pixel's span differs (zero padding)
    torch.testing.assert_close(got[..., b:-b, b:-b], want[..., b:-b, b:-b])
    assert up.weight.requires_grad, "the upsampler is a layer to train"


def test_bilinear_kernel_values():
    torch.testing.assert_close(segment.bilinear_kernel(2)[0], torch.tensor([0.25, 0.75, 0.75, 0.25]) * 0.25)
    k3 = segment.bilinear_kernel(3)
    assert k3.shape == (5, 5) and k3[2, 2] == 1.0
    with pytest.raises(ValueError):
        segment.bilinear_kernel(0)


def test_convolutionalised_classifier_is_the_classifier_at_every_position():
    torch.manual_seed(0)
    net = models.BaselineCNN(c1=8, c2=16, hidden=32).eval()
    fcn = segment.convolutionalise(net).eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(fcn(x)[:, :, 0, 0], net(x), atol=1e-5, rtol=1e-5)
    big = torch.rand(1, 1, 44, 52)
    heat = fcn(big)                                               # [1, 10, 5, 7]
    assert heat.shape == (1, 10, (44 - 28) // 4 + 1, (52 - 28) // 4 + 1)
    for i in range(heat.shape[2]):
        for j in range(heat.shape[3]):
            crop = big[:, :, 4 * i:4 * i + 28, 4 * j:4 * j + 28]
            torch.testing.assert_close(heat[:, :, i, j], net(crop), atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="BaselineCNN"):
        segment.convolutionalise(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("cls", [segment.UNet, segment.FCN])
@pytest.mark.parametrize("skips", [True, False])
def test_networks_keep_the_image_size(cls, skips):
    torch.manual_seed(0)
    net = cls(5, skips=skips)
    out = net(torch.rand(2, 3, 32, 40))
    assert out.shape == (2, 5, 32, 40)
    out.sum().backward()                                          # every part is trainable
    unused = [n for n, p in net.named_parameters() if p.grad is None]
    assert not unused, f"parameters that take no part in the output: {unused}"
    with pytest.raises(ValueError, match="divisible"):
        net(torch.rand(1, 3, 30, 32))


def test_unet_skips_change_the_decoder_inputs():
    with_skips, without = segment.UNet(3, skips=True), segment.UNet(3, skips=False)
    assert with_skips.merge[0][0].in_channels == 2 * without.merge[0][0].in_channels
    with pytest.raises(ValueError, match="two levels"):
        segment.UNet(3, widths=(16,))


def test_boundary_band_matches_a_chessboard_distance_transform():
    from scipy.ndimage import distance_transform_cdt
    g = torch.Generator().manual_seed(3)
    truth = torch.zeros(2, 20, 24, dtype=torch.long)
    truth[0, 4:12, 5:15] = 1
    truth[0, 9:18, 12:22] = 2
    truth[1] = torch.randint(0, 3, (20, 24), generator=g)
    for width in (0, 1, 2, 3):
        band = segment.boundary_band(truth, width)
        for n in range(2):
            t = truth[n].numpy()
            edge = np.zeros_like(t, dtype=bool)
            edge[1:] |= t[1:] != t[:-1]
            edge[:-1] |= t[1:] != t[:-1]
            edge[:, 1:] |= t[:, 1:] != t[:, :-1]
            edge[:, :-1] |= t[:, 1:] != t[:, :-1]
            want = distance_transform_cdt(~edge, metric="chessboard") <= width
            np.testing.assert_array_equal(band[n].numpy(), want)
    assert not segment.boundary_band(torch.zeros(5, 5), 2).any(), "one class: no boundary"
    assert segment.boundary_band(truth[0], 1).shape == (20, 24)
    # a band wider than the image covers every pixel of an image with a boundary
    assert segment.boundary_band(truth[0], 40).all()
    with pytest.raises(ValueError):
        segment.boundary_band(truth, -1)


def test_ab_bins_and_quantisation_against_brute_force():
    from scipy.spatial import cKDTree
    g = torch.Generator().manual_seed(0)
    ab = (torch.rand(3, 2, 9, 7, generator=g) - 0.5) * 180
    centres = segment.ab_bins(ab, step=10)
    px = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    # every pixel lies in the cell of some centre, and every centre's cell holds a pixel
    cells = torch.round(px / 10)
    assert set(map(tuple, cells.long().tolist())) == set(map(tuple, torch.round(centres / 10).long().tolist()))
    assert torch.equal(centres % 10, torch.zeros_like(centres)), "the centres are multiples of the step"
    q = segment.quantise_ab(ab, centres, chunk=50)            # chunks smaller than the pixels: joined right
    _, want = cKDTree(centres.numpy()).query(px.numpy())
    np.testing.assert_array_equal(q.flatten().numpy(), want)
    assert q.shape == (3, 9, 7)
    # a pixel's nearest centre is its own cell's
    np.testing.assert_array_equal(torch.floor(centres[q.flatten()] / 10).numpy(), cells.numpy())
    # grey has a bin of its own: a grey pixel is quantised to (0, 0), not to a coloured neighbour
    grey = torch.zeros(1, 2, 2, 2)
    grey[0, :, 1, 1] = torch.tensor([3.0, -4.0])
    c = segment.ab_bins(torch.cat([grey, ab[:1, :, :2, :2]]), step=10)
    assert c[segment.quantise_ab(grey, c)].abs().max() == 0
    with pytest.raises(ValueError, match=r"\[N, 2, H, W\]"):
        segment.ab_bins(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="centres"):
        segment.quantise_ab(ab, torch.zeros(0, 2))


def test_rebalance_weights():
    w = segment.rebalance_weights(torch.tensor([0, 0, 0, 1]), 3, lam=0.5)
    p = torch.tensor([0.75, 0.25, 0.0], dtype=torch.float64)
    want = 1 / (0.5 * p + 0.5 / 3)
    want = want / (p * want).sum()
    torch.testing.assert_close(w, want.float())
    assert float((p.float() * w).sum()) == pytest.approx(1.0)
    assert w[2] > w[1] > w[0], "rarer bins weigh more"
    torch.testing.assert_close(segment.rebalance_weights(torch.tensor([0, 1, 2]), 3, lam=1.0), torch.ones(3))
    with pytest.raises(ValueError):
        segment.rebalance_weights(torch.tensor([3]), 3)
    with pytest.raises(ValueError):
        segment.rebalance_weights(torch.tensor([0]), 3, lam=0.0)
    with pytest.raises(ValueError, match="bin indices"):
        segment.rebalance_weights(torch.tensor([0, -1]), 3)
    torch.testing.assert_close(segment.rebalance_weights(torch.zeros(0, dtype=torch.long), 4), torch.ones(4))


def test_annealed_mean_between_the_mean_and_the_mode():
    centres = torch.tensor([[-50.0, 0.0], [0.0, 0.0], [60.0, 20.0]])
    logits = torch.log(torch.tensor([0.2, 0.3, 0.5]))[None, :, None, None].expand(2, 3, 4, 5)
    mean = (torch.tensor([0.2, 0.3, 0.5])[:, None] * centres).sum(0)
    torch.testing.assert_close(segment.annealed_mean(logits, centres, 1.0)[0, :, 0, 0], mean)
    torch.testing.assert_close(segment.annealed_mean(logits, centres, 1e-3)[1, :, 3, 4], centres[2])
    mid = segment.annealed_mean(logits, centres, 0.38)[0, :, 0, 0]
    assert mean.norm() < mid.norm() < centres[2].norm(), "sharpening moves the colour away from grey"
    with pytest.raises(ValueError):
        segment.annealed_mean(logits, centres, 0.0)
    with pytest.raises(ValueError, match="Q = 3"):
        segment.annealed_mean(torch.zeros(1, 4, 2, 2), centres)


def test_off_centre_moves_or_blanks_every_image():
    x = torch.zeros(200, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0                      # a centred blob
    out = segment.off_centre(x, seed=0)
    assert out.shape == x.shape and torch.equal(out, segment.off_centre(x, seed=0))
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    blank = out.flatten(1).sum(1) == 0
    assert 0.1 < blank.float().mean() < 0.3, "about one in five blank"
    for img in out[~blank][:, 0]:
        cy, cx = float((img * ys).sum() / img.sum()), float((img * xs).sum() / img.sum())
        assert max(abs(cy - 13.5), abs(cx - 13.5)) >= 7, "the mass has left the centre"
    with pytest.raises(ValueError):
        segment.off_centre(torch.zeros(3, 28, 28))
    rgb = x.expand(-1, 3, -1, -1)                      # every channel moved the same way
    out3 = segment.off_centre(rgb, seed=0)
    assert torch.equal(out3, out.expand(-1, 3, -1, -1))


# ----------------------------------------------------------------------------------------------
# Lab 11's references and fixtures (cvdl.grading.labcheck)
# ----------------------------------------------------------------------------------------------


def test_lab_up_block_reference_matches_torchvision_center_crop():
    from torchvision.transforms.functional import center_crop

    from cvdl.grading.labcheck import FIXTURES, refs
    up, conv = FIXTURES["up_parts"](seed=0, c_in=6, c_out=3)
    assert not conv.training and isinstance(conv, segment.DoubleConv)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 6, 4, 5, generator=g)                       # upsampled: 8 × 10
    for hs, ws in ((8, 10), (12, 14), (10, 16)):                  # even differences: no rounding question
        skip = torch.rand(2, 3, hs, ws, generator=g)
        want = conv(torch.cat([center_crop(skip, [8, 10]), up(x)], 1))
        torch.testing.assert_close(refs.up_block(x, skip, up, conv), want)
    skip = torch.rand(2, 3, 11, 13, generator=g)                  # odd: the top-left rounds down
    want = conv(torch.cat([skip[..., 1:9, 1:11], up(x)], 1))
    torch.testing.assert_close(refs.up_block(x, skip, up, conv), want)
    with pytest.raises(ValueError, match="smaller"):
        refs.up_block(x, torch.rand(2, 3, 8, 9), up, conv)


def test_lab_iou_reference_and_apply_probe():
    from cvdl.grading.labcheck import FIXTURES, PROBES, refs
    iou, miou = refs.iou_from_confusion(torch.tensor([[2, 1, 0], [0, 3, 0], [0, 0, 0]]))
    torch.testing.assert_close(iou[:2], torch.tensor([2 / 3, 3 / 4], dtype=torch.float64))
    assert math.isnan(iou[2]) and miou == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert math.isnan(refs.iou_from_confusion(torch.zeros(2, 2, dtype=torch.int64))[1])
    model = FIXTURES["baseline_cnn"](seed=3)
    out = PROBES["apply"](segment.convolutionalise(model), (), {}, input_shape=(2, 1, 28, 28), seed=4)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out[:, :, 0, 0], model(x).detach())
    with pytest.raises(TypeError):
        PROBES["apply"](lambda x: x, (), {}, input_shape=(1,))
