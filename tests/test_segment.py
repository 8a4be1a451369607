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
    with pytest.raises(ValueError, match="divisible"):
        net(torch.rand(1, 3, 30, 32))


def test_unet_skips_change_the_decoder_inputs():
    with_skips, without = segment.UNet(3, skips=True), segment.UNet(3, skips=False)
    assert with_skips.merge[0][0].in_channels == 2 * without.merge[0][0].in_channels
    with pytest.raises(ValueError, match="two levels"):
        segment.UNet(3, widths=(16,))
