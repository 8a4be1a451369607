"""cvdl.art: Gram matrices, image priors, feature inversion, DeepDream, style transfer, random features.

Each from-scratch piece is checked against an explicit reference (einsum / loops / NumPy) and its
gradient against finite differences (``torch.autograd.gradcheck`` in float64).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cvdl import art


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Gram matrix
# ----------------------------------------------------------------------------------------------


def test_gram_matrix_matches_einsum_and_loops():
    f = _rand(2, 5, 4, 3) - 0.5
    g = art.gram_matrix(f)
    assert g.shape == (2, 5, 5)
    ref = torch.einsum("bihw,bjhw->bij", f, f) / (4 * 3)
    torch.testing.assert_close(g, ref, rtol=1e-12, atol=1e-12)
    fn = f.numpy()
    loops = np.zeros((2, 5, 5))
    for b in range(2):
        for i in range(5):
            for j in range(5):
                loops[b, i, j] = sum(fn[b, i, y, x] * fn[b, j, y, x] for y in range(4) for x in range(3)) / 12
    np.testing.assert_allclose(g.numpy(), loops, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g.transpose(1, 2))                      # symmetric
    assert (torch.linalg.eigvalsh(g) > -1e-12).all()                      # positive semi-definite


def test_gram_matrix_ignores_where_features_are():
    f = _rand(1, 3, 6, 6)
    perm = torch.randperm(36, generator=torch.Generator().manual_seed(1))
    shuffled = f.flatten(2)[..., perm].reshape(f.shape)                   # same values, other places
    torch.testing.assert_close(art.gram_matrix(shuffled), art.gram_matrix(f))


def test_gram_matrix_gradcheck():
    f = (_rand(2, 3, 4, 5) - 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(art.gram_matrix, (f,))


# ----------------------------------------------------------------------------------------------
# Total variation and the α-norm
# ----------------------------------------------------------------------------------------------


def _tv_numpy(x: np.ndarray, beta: float) -> np.ndarray:
    b, c, h, w = x.shape
    out = np.zeros(b)
    for n in range(b):
        for k in range(c):
            for i in range(h - 1):
                for j in range(w - 1):
                    d = (x[n, k, i, j + 1] - x[n, k, i, j]) ** 2 + (x[n, k, i + 1, j] - x[n, k, i, j]) ** 2
                    out[n] += d ** (beta / 2)
    return out


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_total_variation_matches_numpy(beta):
    x = _rand(2, 3, 5, 6, seed=2)
    np.testing.assert_allclose(art.total_variation(x, beta).numpy(), _tv_numpy(x.numpy(), beta), rtol=1e-12)


def test_total_variation_of_constant_image_is_zero_and_of_an_edge_is_its_length():
    assert art.total_variation(torch.full((1, 3, 4, 4), 0.7)).item() == 0.0
    step = torch.zeros(1, 1, 5, 5)
    step[..., 3:] = 1.0                                   # a vertical edge, 4 rows of differences
    assert art.total_variation(step, beta=1.0).item() == pytest.approx(4.0)


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_total_variation_gradcheck(beta):
    x = _rand(2, 2, 4, 5, seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: art.total_variation(t, beta), (x,))


def test_alpha_norm_matches_numpy_and_gradcheck():
    x = _rand(2, 3, 4, 4, seed=4) * 2 - 1
    for alpha in (1.0, 2.0, 6.0):
        ref = (np.abs(x.numpy()) ** alpha).reshape(2, -1).sum(1)
        np.testing.assert_allclose(art.alpha_norm(x, alpha).numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(art.alpha_norm(x, 2.0).numpy(), (x.flatten(1).norm(dim=1) ** 2).numpy(), rtol=1e-12)
    xg = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: art.alpha_norm(t, 6.0), (xg,))
    assert torch.autograd.gradcheck(lambda t: art.alpha_norm(t, 1.5), (xg,))


def test_priors_reject_bad_input():
    with pytest.raises(ValueError, match="beta"):
        art.total_variation(torch.rand(1, 1, 3, 3), beta=0)
    with pytest.raises(ValueError, match="H, W >= 2"):
        art.total_variation(torch.rand(1, 1, 1, 3))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        art.total_variation(torch.rand(3, 3))
    with pytest.raises(ValueError, match="alpha"):
        art.alpha_norm(torch.rand(1, 1, 3, 3), alpha=0.5)
    with pytest.raises(TypeError, match="floating-point"):
        art.gram_matrix(torch.ones(1, 2, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        art.gram_matrix(torch.rand(2, 3, 4))
    with pytest.raises(TypeError, match="beta must be a positive number"):
        art.total_variation(torch.rand(1, 1, 3, 3), beta="2")


# ----------------------------------------------------------------------------------------------
# Feature extraction by layer name
# ----------------------------------------------------------------------------------------------


class _Boom(nn.Module):
    def forward(self, x):
        raise AssertionError("the forward pass should have stopped before this layer")


def test_feature_extractor_returns_named_layers_and_stops_early():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(), _Boom())
    x = torch.rand(2, 3, 10, 10)
    fx = art.FeatureExtractor(body, {"relu1": "1", "relu2": "3"})
    out = fx(x)
    assert list(out) == ["relu1", "relu2"]
    torch.testing.assert_close(out["relu1"], body[1](body[0](x)))
    torch.testing.assert_close(out["relu2"], body[3](body[2](body[1](body[0](x)))))
    torch.testing.assert_close(fx.layer("relu2")(x), out["relu2"])
    assert not any(m._forward_hooks for m in body.modules())             # hooks removed after the call
    xg = x.clone().requires_grad_(True)                                  # gradients flow to the input
    fx(xg)["relu1"].sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_feature_extractor_and_layer_output_agree():
    # one hook implementation (viz.recording) behind both APIs: FeatureExtractor keeps the graph,
    # viz.layer_output runs without gradients, in batches, to the CPU — the numbers are the same
    from cvdl import viz

    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(), nn.Flatten())
    x = torch.rand(5, 3, 10, 10)
    hooked = art.FeatureExtractor(body, ["3"])(x)["3"]
    assert hooked.requires_grad
    torch.testing.assert_close(viz.layer_output(body, "3", x, batch_size=2), hooked.detach())


def test_feature_extractor_rejects_unknown_layers():
    net = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="no layer 'conv9'"):
        art.FeatureExtractor(net, ["conv9"])
    with pytest.raises(ValueError, match="at least one"):
        art.FeatureExtractor(net, [])
    with pytest.raises(ValueError, match="string"):
        art.FeatureExtractor(net, "0")
    with pytest.raises(ValueError, match="unknown layer"):
        art.FeatureExtractor(net, ["0"]).layer("1")


# ----------------------------------------------------------------------------------------------
# The random-feature network and VGG names
# ----------------------------------------------------------------------------------------------


def test_random_feature_net_is_determined_by_its_seed():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    a, b, c = art.RandomFeatureNet(seed=3), art.RandomFeatureNet(seed=3), art.RandomFeatureNet(seed=4)
    fa, fb, fc = a(x), b(x), c(x)
    assert list(fa) == ["scale0", "scale1", "scale2", "scale3"]
    for k in fa:
        assert torch.equal(fa[k], fb[k]), f"{k}: same seed must give the same features"
        assert not torch.allclose(fa[k], fc[k]), f"{k}: another seed must give other features"
    assert [tuple(v.shape) for v in fa.values()] == [(2, 128, 32 // 2 ** k, 32 // 2 ** k) for k in range(4)]
    for k in range(4):
        w = getattr(a, f"scale{k}")[0].weight
        torch.testing.assert_close(w.flatten(1).norm(dim=1), torch.ones(128))   # unit-norm filters
        assert not w.requires_grad
    # scale k filters the image downsampled by 2^k (antialiased bilinear), reflect-padded
    z = (x - torch.tensor(art.IMAGENET_MEAN)[:, None, None]) / torch.tensor(art.IMAGENET_STD)[:, None, None]
    z2 = F.interpolate(z, scale_factor=0.25, mode="bilinear", antialias=True, align_corners=False)
    ref = F.relu(F.conv2d(F.pad(z2, (2, 2, 2, 2), mode="reflect"), a.scale2[0].weight))
    torch.testing.assert_close(fa["scale2"], ref)
    with pytest.raises(ValueError, match="odd"):
        art.RandomFeatureNet(kernel_size=4)
    with pytest.raises(ValueError, match="RGB"):
        a(torch.rand(1, 1, 16, 16))


@pytest.mark.parametrize("cfg, last", [("D", ("conv5_3", "features.28")), ("E", ("relu5_4", "features.35"))])
def test_vgg_feature_net_names_follow_the_paper(cfg, last):
    from torchvision.models.vgg import cfgs, make_layers

    vgg = nn.Module()
    vgg.features = make_layers(cfgs[cfg])                                 # VGG-16 ("D") / VGG-19 ("E")
    net, names = art.vgg_feature_net(vgg)
    assert names["conv1_1"] == "features.0" and names["relu1_1"] == "features.1"
    assert names["pool1"] == "features.4" and names["conv2_1"] == "features.5"
    assert names["relu4_2"] == ("features.20" if cfg == "D" else "features.22")
    assert names[last[0]] == last[1]
    fx = art.FeatureExtractor(net, {k: names[k] for k in ("conv1_1", "relu1_1", "relu2_1")})
    x = torch.rand(1, 3, 32, 32)
    out = fx(x)
    z = (x - torch.tensor(art.IMAGENET_MEAN)[:, None, None]) / torch.tensor(art.IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(out["conv1_1"], vgg.features[0](z))
    torch.testing.assert_close(out["relu1_1"], out["conv1_1"].clamp_min(0))   # ReLU not in place
    assert out["relu2_1"].shape == (1, 128, 16, 16)
    with pytest.raises(ValueError, match="VGG"):
        art.vgg_feature_net(nn.Linear(2, 2))


# ----------------------------------------------------------------------------------------------
# Optimisations: inversion, DeepDream, texture and style
# ----------------------------------------------------------------------------------------------


def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()).eval()


def test_feature_loss_matches_its_formula():
    f, t = _rand(3, 4, 2, 2), _rand(3, 4, 2, 2, seed=1)
    ref = ((f - t) ** 2).flatten(1).sum(1) / (t ** 2).flatten(1).sum(1)
    torch.testing.assert_close(art.feature_loss(f, t), ref)
    with pytest.raises(ValueError, match="differ in shape"):
        art.feature_loss(f, t[:, :2])


def test_inversion_decreases_its_loss_and_tv_smooths():
    net = _small_net()
    img = torch.zeros(1, 1, 16, 16)
    img[..., 4:12, 6:10] = 1.0                                             # a bar
    phi = lambda x: net(x)  # noqa: E731
    target = phi(img).detach()
    x0 = 0.5 + 0.1 * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    plain = art.invert(phi, target, x0, steps=60, lr=0.05)
    first, last = plain.first_last("feature")
    assert last < 0.2 * first, f"the feature error should fall: {first:.3f} -> {last:.3f}"
    smooth = art.invert(phi, target, x0, steps=60, lr=0.05, lam_tv=1.0)
    tv = lambda x: art.total_variation(x).item()  # noqa: E731
    assert tv(smooth.image) < tv(plain.image), (tv(smooth.image), tv(plain.image))
    assert set(plain.history) == {"loss", "feature", "alpha", "tv"} and len(plain.history["loss"]) == 60
    with pytest.raises(ValueError, match="steps"):
        art.invert(phi, target, x0, steps=0)
    with pytest.raises(ValueError, match="lam_tv"):
        art.invert(phi, target, x0, lam_tv=-1.0)


def test_deepdream_raises_the_objective_and_keeps_the_size():
    net = _small_net()
    img = _rand(1, 1, 20, 24, dtype=torch.float32)
    res = art.deepdream(net, img, steps=5, octaves=2, octave_scale=1.5, step_size=0.02)
    assert res.image.shape == img.shape and 0 <= res.image.min() and res.image.max() <= 1
    obj, octave = res.history["objective"], res.history["octave"]
    assert octave == [0] * 5 + [1] * 5
    assert obj[9] > obj[5], "within an octave the objective should rise"
    with torch.no_grad():
        assert net(res.image).pow(2).mean() > net(img).pow(2).mean()
    frames, objectives = art.dream_zoom(net, img, frames=3, steps=2)
    assert len(frames) == 3 and len(objectives) == 3 and frames[-1].shape == img.shape
    with pytest.raises(ValueError, match="octave_scale"):
        art.deepdream(net, img, octave_scale=0.5)


def test_zoom_centre():
    x = _rand(1, 2, 8, 8, dtype=torch.float32)
    torch.testing.assert_close(art.zoom_centre(x, 1.0), x)
    ref = F.interpolate(x[..., 2:6, 2:6], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(art.zoom_centre(x, 2.0), ref)
    with pytest.raises(ValueError, match="zoom"):
        art.zoom_centre(x, 0.9)


def test_style_and_content_losses_vanish_at_their_targets():
    fx = art.FeatureExtractor(art.RandomFeatureNet(scales=2, channels=16, seed=0), ["scale0", "scale1"])
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    fa, fb = fx(a), fx(b)
    grams = {k: art.gram_matrix(v) for k, v in fa.items()}
    assert art.style_loss(fa, grams, ["scale0", "scale1"]).item() == pytest.approx(0.0, abs=1e-10)
    assert art.style_loss(fb, grams, {"scale0": 1.0, "scale1": 0.5}).item() > 0
    assert art.content_loss(fa, fa, ["scale1"]).item() == 0.0
    with pytest.raises(ValueError, match="missing"):
        art.style_loss(fa, grams, ["scale7"])


def test_texture_synthesis_and_style_transfer_reduce_their_losses():
    fx = art.FeatureExtractor(art.RandomFeatureNet(scales=2, channels=16, seed=0), ["scale0", "scale1"])
    g = torch.Generator().manual_seed(0)
    style = (torch.rand(1, 3, 16, 16, generator=g) > 0.5).float()
    tex = art.style_transfer(fx, style, None, style_layers=["scale0", "scale1"], init="noise", steps=30)
    s0, s1 = tex.first_last("style")
    assert s1 < 0.1 * s0, f"texture synthesis should match the Gram matrices: {s0:.3g} -> {s1:.3g}"
    assert tex.image.shape == style.shape and 0 <= tex.image.min() and tex.image.max() <= 1
    content = torch.rand(1, 3, 16, 16, generator=g)
    res = art.style_transfer(fx, style, content, style_layers=["scale0", "scale1"], content_layers=["scale1"],
                             steps=20, optimizer="adam", lr=0.05)
    assert res.history["style"][-1] < res.history["style"][0]
    assert res.history["content"][0] == 0.0                               # starts at the content image
    with pytest.raises(ValueError, match="content_layers"):
        art.style_transfer(fx, style, content, style_layers=["scale0"])
    with pytest.raises(ValueError, match="needs a content image"):
        art.style_transfer(fx, style, None, style_layers=["scale0"])
    with pytest.raises(ValueError, match="optimizer"):
        art.style_transfer(fx, style, content, style_layers=["scale0"], content_layers=["scale1"], optimizer="sgd")
    with pytest.raises(ValueError, match="not one of the extractor"):
        art.style_transfer(fx, style, None, style_layers=["scale5"], init="noise")


def test_upconv_decoder_shapes():
    dec = art.UpconvDecoder(10, (1, 28, 28))
    out = dec(torch.randn(4, 10))
    assert out.shape == (4, 1, 28, 28) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="multiples of 4"):
        art.UpconvDecoder(10, (1, 30, 30))
    with pytest.raises(ValueError, match="in_features"):
        art.UpconvDecoder(0)
    with pytest.raises(TypeError, match="in_features must be a positive integer"):
        art.UpconvDecoder(10.0)
