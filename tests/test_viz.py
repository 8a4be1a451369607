"""cvdl.viz against references: finite differences, the guided-ReLU rule, brute-force loops,
scikit-learn's neighbours and ROC AUC, and direct computation instead of hooks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from cvdl import arith, viz
from cvdl.models import Normalize


def small_cnn(seed: int = 0, dtype=torch.float64) -> nn.Sequential:
    # Normalize + a small LeNet (BaselineCNN's layout) as one flat Sequential: [N, 1, 28, 28] -> [N, 10]
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2),   # [N, 4, 12, 12]
                         nn.Conv2d(4, 6, 5), nn.ReLU(), nn.MaxPool2d(2),   # [N, 6, 4, 4]
                         nn.Flatten(), nn.Linear(96, 16), nn.ReLU(), nn.Linear(16, 10))
    return nn.Sequential(Normalize(0.1, 0.3), body).to(dtype).eval()


def first(seq: nn.Sequential, n: int) -> nn.Sequential:
    return nn.Sequential(*list(seq)[:n])


def padded_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).double().eval()


# ---------------------------------------------------------------------------------------------- hooks

def test_layer_output_matches_direct_computation():
    model = small_cnn()
    x = torch.rand(7, 1, 28, 28, dtype=torch.float64)
    body = model[1]
    direct = first(body, 5)(model[0](x))  # up to the second conv's ReLU: [7, 6, 8, 8]
    hooked = viz.layer_output(model, body[4], x, batch_size=3)
    assert hooked.shape == (7, 6, 8, 8)
    torch.testing.assert_close(hooked, direct)  # float64, like the model: nothing is rounded to float32
    by_name = viz.layer_output(model, "1.8", x, flatten=True)  # penultimate ReLU [7, 16]
    torch.testing.assert_close(by_name, first(body, 9)(model[0](x)))
    assert not any(m._forward_hooks for m in model.modules())  # the hook is gone


def test_layer_output_keeps_the_model_dtype_and_mode():
    model = small_cnn(dtype=torch.float64).train()
    x = torch.rand(5, 1, 28, 28)                                # float32 images, float64 model
    out = viz.layer_output(model, "1.8", x, batch_size=2)
    assert out.dtype == torch.float64 and out.device.type == "cpu"
    with torch.no_grad():
        torch.testing.assert_close(out, first(model[1], 9)(model[0](x.double())))
    assert model.training and all(m.training for m in model.modules())  # mode restored
    assert viz.layer_output(small_cnn(dtype=torch.float32), "1.8", x).dtype == torch.float32


def test_recording_hooks_and_stop():
    model = small_cnn()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    body = model[1]
    with viz.recording({"conv1": body[0], "fc1": body[7]}, keep=lambda t: t.shape) as rec:
        model(x)
        model(x[:1])
    assert rec == {"conv1": [(3, 4, 24, 24), (1, 4, 24, 24)], "fc1": [(3, 16), (1, 16)]}

    class Boom(nn.Module):
        def forward(self, t):
            raise AssertionError("the forward pass should have stopped before this layer")

    net = nn.Sequential(body[0], nn.ReLU(), Boom())
    with viz.recording({"relu": net[1], "conv": net[0]}, stop=True) as rec:
        net(x)
    torch.testing.assert_close(rec["relu"][0], net[0](x).clamp_min(0))
    assert len(rec["conv"]) == 1
    assert not any(m._forward_hooks for m in net.modules())
    with pytest.raises(AssertionError, match="should have stopped"):  # other errors pass through,
        with viz.recording({"boom": net[2]}, stop=True):             # and the hooks still go
            net(x)
    assert not any(m._forward_hooks for m in net.modules())


def test_eval_mode_restores_every_module():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5)).train()
    model[1].eval()                          # a frozen BatchNorm inside a training model
    with viz.eval_mode(model) as m:
        assert m is model and not any(mod.training for mod in model.modules())
    assert [mod.training for mod in model.modules()] == [True, True, False, True]


def test_layer_output_errors():
    model = small_cnn()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    with pytest.raises(ValueError, match="no sub-module"):
        viz.layer_output(model, "9.9", x)
    with pytest.raises(ValueError, match="not a sub-module"):
        viz.layer_output(model, nn.ReLU(), x)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        viz.layer_output(model, "1.0", x[0])
    with pytest.raises(TypeError, match="floating-point"):
        viz.layer_output(model, "1.0", (x * 255).to(torch.uint8))
    with pytest.raises(TypeError, match="x must be a tensor"):
        viz.layer_output(model, "1.0", x.numpy())
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        viz.layer_output(model, "1.0", x, batch_size=0)


# ---------------------------------------------------------------------------------------------- neighbours

def test_nearest_neighbours_match_sklearn():
    g = torch.Generator().manual_seed(0)
    db, q = torch.randn(60, 9, generator=g), torch.randn(11, 9, generator=g)
    dist, idx = viz.nearest_neighbours(q, db, k=4)
    ref_d, ref_i = NearestNeighbors(n_neighbors=4).fit(db.numpy()).kneighbors(q.numpy())
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_allclose(dist.numpy(), ref_d, rtol=1e-5)
    # excluding self: the same as asking sklearn for k + 1 and dropping the first (the point itself)
    _, idx_self = viz.nearest_neighbours(db, db, k=3, exclude_self=True)
    ref_self = NearestNeighbors(n_neighbors=4).fit(db.numpy()).kneighbors(db.numpy())[1][:, 1:]
    np.testing.assert_array_equal(idx_self.numpy(), ref_self)


def test_label_agreement_and_errors():
    assert viz.label_agreement(torch.tensor([[1, 1], [2, 0]]), torch.tensor([1, 0])) == 0.75
    with pytest.raises(ValueError, match="k must be"):
        viz.nearest_neighbours(torch.zeros(2, 3), torch.zeros(4, 3), k=5)
    with pytest.raises(ValueError, match="same D"):
        viz.nearest_neighbours(torch.zeros(2, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="exclude_self"):
        viz.nearest_neighbours(torch.zeros(2, 3), torch.zeros(4, 3), exclude_self=True)
    with pytest.raises(ValueError, match=r"\[Q, k\]"):
        viz.label_agreement(torch.tensor([1, 2]), torch.tensor([1, 2]))


# ---------------------------------------------------------------------------------------------- occlusion

@pytest.mark.parametrize("score", ["prob", "logit"])
@pytest.mark.parametrize("patch,stride,value", [(8, 4, 0.0), (5, 3, 0.5), (28, 1, 0.2)])
def test_occlusion_map_matches_brute_force(score, patch, stride, value):
    model = small_cnn()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    target = torch.tensor([3, 7])
    heat = viz.occlusion_map(model, x, target, patch=patch, stride=stride, value=value, score=score,
                             batch_size=7)
    n_pos = (28 - patch) // stride + 1
    assert heat.shape == (2, n_pos, n_pos)

    def s(img, c):
        out = model(img[None])[0]
        return (out.softmax(0) if score == "prob" else out)[c].item()

    with torch.no_grad():
        for k in range(2):
            base = s(x[k], int(target[k]))
            for i in range(n_pos):
                for j in range(n_pos):
                    occ = x[k].clone()
                    occ[:, i * stride:i * stride + patch, j * stride:j * stride + patch] = value
                    assert heat[k, i, j].item() == pytest.approx(base - s(occ, int(target[k])), abs=1e-6)


def test_occlusion_map_keeps_the_model_dtype():
    x = torch.rand(1, 1, 28, 28)
    for dtype in (torch.float64, torch.float32):
        model = small_cnn(dtype=dtype).train()
        heat = viz.occlusion_map(model, x, 3, patch=14, stride=7, score="logit")
        assert heat.dtype == dtype and heat.shape == (1, 3, 3)
        assert model.training  # the model's mode is restored
        viz.saliency(model, x.to(dtype), 3)
        assert model.training  # by saliency too
    with torch.no_grad():   # float64 all the way: the drop equals the float64 forward passes
        m64 = small_cnn(dtype=torch.float64)
        occ = x.double().clone()
        occ[..., :14, :14] = 0
        want = m64(x.double())[0, 3] - m64(occ)[0, 3]
    heat64 = viz.occlusion_map(m64, x, 3, patch=14, stride=7, score="logit")
    assert heat64[0, 0, 0].item() == pytest.approx(want.item(), abs=1e-12)


def test_occlusion_errors():
    model = small_cnn()
    x = torch.rand(1, 1, 28, 28, dtype=torch.float64)
    with pytest.raises(ValueError, match="patch must be"):
        viz.occlusion_map(model, x, 0, patch=29)
    with pytest.raises(ValueError, match="stride must be"):
        viz.occlusion_map(model, x, 0, stride=0)
    with pytest.raises(TypeError, match="stride must be a positive integer"):
        viz.occlusion_map(model, x, 0, stride=2.0)
    with pytest.raises(ValueError, match="target must lie"):
        viz.occlusion_map(model, x, 10)
    with pytest.raises(ValueError, match="score must be"):
        viz.occlusion_map(model, x, 0, score="loss")


# ---------------------------------------------------------------------------------------------- saliency

def test_saliency_matches_finite_differences():
    model = small_cnn()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    target = torch.tensor([2, 5])
    grad = viz.saliency(model, x, target)
    assert grad.shape == x.shape
    eps = 1e-6
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k in range(2):
            for p in torch.randint(0, 28 * 28, (12,), generator=g).tolist():
                e = torch.zeros_like(x[k]).flatten()
                e[p] = eps
                e = e.view_as(x[k])
                fd = (model((x[k] + e)[None])[0, target[k]] - model((x[k] - e)[None])[0, target[k]]) / (2 * eps)
                assert grad[k].flatten()[p].item() == pytest.approx(fd.item(), rel=1e-4, abs=1e-8)
    # a random direction, not just single pixels
    d = torch.randn(x[:1].shape, dtype=torch.float64, generator=g)
    with torch.no_grad():
        fd = (model(x[:1] + eps * d)[0, 2] - model(x[:1] - eps * d)[0, 2]) / (2 * eps)
    assert (grad[0] * d[0]).sum().item() == pytest.approx(fd.item(), rel=1e-5)


def test_saliency_map_is_channel_max_of_abs():
    grad = torch.randn(3, 3, 5, 6)
    m = viz.saliency_map(grad)
    assert m.shape == (3, 5, 6)
    torch.testing.assert_close(m, torch.maximum(grad[:, 0].abs(), torch.maximum(grad[:, 1].abs(), grad[:, 2].abs())))


def test_saliency_does_not_touch_parameter_gradients():
    model = small_cnn()
    viz.saliency(model, torch.rand(1, 1, 28, 28, dtype=torch.float64), 0)
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------- guided backprop

def test_guided_relu_follows_the_definition():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, dtype=torch.float64, generator=g).requires_grad_(True)
    upstream = torch.randn(1000, dtype=torch.float64, generator=g)
    y = viz.GuidedReLUFunction.apply(x)
    torch.testing.assert_close(y, torch.relu(x))
    (gx,) = torch.autograd.grad(y, x, upstream)
    expected = upstream * (x.detach() > 0) * (upstream > 0)
    torch.testing.assert_close(gx, expected)
    # the ordinary ReLU passes negative gradients too: the two rules really differ
    (plain,) = torch.autograd.grad(torch.relu(x), x, upstream)
    assert (plain < 0).any() and not (gx < 0).any()


def test_guided_backprop_of_a_two_layer_net_by_hand():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 20), nn.ReLU(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    x = torch.randn(2, 6, dtype=torch.float64)
    W1, b1, W2, b2, W3 = net[0].weight, net[0].bias, net[2].weight, net[2].bias, net[4].weight
    for k, c in enumerate([0, 2]):
        with torch.no_grad():
            z1 = W1 @ x[k] + b1
            z2 = W2 @ torch.relu(z1) + b2
            g2 = W3[c] * (z2 > 0) * (W3[c] > 0)  # guided rule at the second ReLU
            up = W2.T @ g2
            g1 = up * (z1 > 0) * (up > 0)  # and at the first
            expected = W1.T @ g1
        got = viz.guided_backprop(_Image(net), x[k].view(1, 1, 1, 6), c).view(6)
        torch.testing.assert_close(got, expected)
        assert (got != 0).any(), "a vacuous check: pick another seed"
    # outside the context the model is unchanged: plain gradients again
    assert isinstance(net[1], nn.ReLU) and isinstance(net[3], nn.ReLU)


class _Image(nn.Module):
    """Lets an MLP take [N, 1, 1, D] 'images'."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.flatten(1))


def test_guided_backprop_on_a_cnn_with_reused_inplace_relu():
    # torchvision's ResNet uses one inplace nn.ReLU module several times: it must be swapped too
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=5).double().eval()
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    with viz.guided_relus(model) as n:
        assert n == 9  # the stem's ReLU and one per BasicBlock (each used twice in its forward)
        assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 9
    gb = viz.guided_backprop(model, x, 1)
    vanilla = viz.saliency(model, x, 1)
    assert gb.shape == vanilla.shape == x.shape and torch.isfinite(gb).all()
    assert not torch.allclose(gb, vanilla)
    with torch.no_grad(), viz.guided_relus(model):
        guided_out = model(x)
    torch.testing.assert_close(guided_out, model(x).detach())  # the forward pass is unchanged


def test_guided_relu6_follows_the_definition():
    g = torch.Generator().manual_seed(0)
    x = (4 * torch.randn(1000, dtype=torch.float64, generator=g)).requires_grad_(True)   # many above 6
    upstream = torch.randn(1000, dtype=torch.float64, generator=g)
    y = viz.GuidedReLU6Function.apply(x)
    torch.testing.assert_close(y, nn.functional.relu6(x))
    (gx,) = torch.autograd.grad(y, x, upstream)
    xd = x.detach()
    torch.testing.assert_close(gx, upstream * (xd > 0) * (xd < 6) * (upstream > 0))
    (plain,) = torch.autograd.grad(nn.functional.relu6(x), x, upstream)
    assert (xd > 6).any() and (plain < 0).any() and not (gx < 0).any()
    torch.testing.assert_close(gx, plain.clamp_min(0))   # ReLU6's own rule, then only positive gradients


def test_guided_relus_swaps_relu6_and_restores_it():
    from torchvision.models import mobilenet_v2

    torch.manual_seed(0)
    model = mobilenet_v2(num_classes=4).double().eval()
    n6 = sum(isinstance(m, nn.ReLU6) for m in model.modules())
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    with viz.guided_relus(model) as n:
        assert n == n6 == 35 and not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules())
        with torch.no_grad():
            guided_out = model(x)
    assert sum(isinstance(m, nn.ReLU6) for m in model.modules()) == n6
    torch.testing.assert_close(guided_out, model(x).detach())   # the forward pass is unchanged
    gb, vanilla = viz.guided_backprop(model, x, 1), viz.saliency(model, x, 1)
    assert gb.shape == x.shape and torch.isfinite(gb).all() and (gb != 0).any()
    assert not torch.allclose(gb, vanilla, rtol=1e-3, atol=0)   # random weights: tiny gradients, compare relatively


def test_guided_relus_needs_relu_modules():
    class F_relu(nn.Module):
        def forward(self, x):
            return torch.relu(x)
    with pytest.raises(ValueError, match="nn.ReLU"):
        with viz.guided_relus(nn.Sequential(nn.Linear(2, 2), F_relu())):
            pass


# ---------------------------------------------------------------------------------------------- class model

def test_class_model_of_a_linear_score_reaches_the_closed_form_optimum():
    # S_c(I) = w_c·I + b_c  ⇒  argmax S_c(I) − λ‖I‖² = w_c / (2λ), objective w_c·w_c/(4λ) + b_c
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    lam = 0.5
    res = viz.class_model(lin, [0, 2], (3, 2, 2), steps=200, lr=0.2, l2=lam)
    w, b = lin[1].weight.detach(), lin[1].bias.detach()
    torch.testing.assert_close(res.images.double().flatten(1), w[[0, 2]] / (2 * lam))
    torch.testing.assert_close(res.objective[-1].double(), (w[[0, 2]] ** 2).sum(1) / (4 * lam) + b[[0, 2]])
    assert res.objective.shape == res.scores.shape == (201, 2)
    # from zeros, the first objective value is the bias, and gradient ascent never decreases it
    torch.testing.assert_close(res.objective[0].double(), b[[0, 2]])
    assert (res.objective.diff(dim=0) >= -1e-9).all()


def test_class_model_increases_a_cnn_score():
    model = small_cnn(dtype=torch.float32)
    res = viz.class_model(model, list(range(10)), (1, 28, 28), steps=30, lr=0.05, l2=0.05)
    assert res.images.shape == (10, 1, 28, 28)
    assert (res.objective[-1] > res.objective[0]).all()
    with torch.no_grad():
        s = model(res.images).gather(1, torch.arange(10)[:, None])[:, 0]
    torch.testing.assert_close(s, res.scores[-1])


def test_class_model_errors():
    lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="shape must be"):
        viz.class_model(lin, [0], (4,))
    with pytest.raises(ValueError, match="at least one"):
        viz.class_model(lin, [], (1, 2, 2))
    with pytest.raises(ValueError, match="target must lie"):
        viz.class_model(lin, [2], (1, 2, 2), steps=1)
    with pytest.raises(ValueError, match="init must have shape"):
        viz.class_model(lin, [0], (1, 2, 2), init=torch.zeros(2, 1, 2, 2))


# ---------------------------------------------------------------------------------------------- patches

def test_top_activations_by_brute_force():
    a = torch.randn(20, 3, 5, 4)
    values, n, i, j = viz.top_activations(a, unit=1, k=4)
    best = sorted(((a[m, 1].max().item(), m) for m in range(20)), reverse=True)[:4]
    assert n.tolist() == [m for _, m in best]
    assert torch.equal(values, a[n, 1, i, j])
    with pytest.raises(ValueError, match="unit must be"):
        viz.top_activations(a, unit=3)
    with pytest.raises(ValueError, match="k must be"):
        viz.top_activations(a, unit=0, k=21)


def test_max_activating_patches_reproduce_the_activation_unpadded():
    # without padding a crop is all the unit sees: the layer applied to the crop alone gives
    # a 1×1 map holding exactly the recorded activation
    model = small_cnn()
    body = model[1]
    stem = nn.Sequential(model[0], *list(body)[:5])  # Normalize, conv, ReLU, pool, conv, ReLU
    rf = arith.receptive_field_trace(list(body)[:5])[-1]
    assert (rf.size, rf.jump, rf.start) == (14, 2, 6.5)
    x = torch.rand(30, 1, 28, 28, dtype=torch.float64)
    acts = viz.layer_output(model, body[4], x).double()  # [30, 6, 8, 8]
    patches, values = viz.max_activating_patches(acts, x, units=[0, 3], size=rf.size, jump=rf.jump,
                                                 start=rf.start, k=5)
    assert patches.shape == (2, 5, 1, 14, 14) and values.shape == (2, 5)
    with torch.no_grad():
        for a, u in enumerate([0, 3]):
            again = stem(patches[a])  # [5, 6, 1, 1]
            torch.testing.assert_close(again[:, u, 0, 0], values[a])


def test_receptive_field_crop_is_the_gradient_support():
    # with padding, the window pokes out of the image; its inside part is exactly where the
    # unit's gradient w.r.t. the input is non-zero. The same geometry as padded_cnn's stem, made
    # linear (no ReLU, average instead of max pooling) so that no path through it is switched off.
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.AvgPool2d(2),
                         nn.Conv2d(4, 5, 3, padding=1)).double()  # [N, 5, 8, 8] for 16×16 inputs
    assert arith.receptive_field_trace(stem) == arith.receptive_field_trace(padded_cnn()[:6])
    rf = arith.receptive_field_trace(stem)[-1]
    for (i, j) in [(0, 0), (3, 5), (7, 7)]:
        ones = torch.ones(1, 3, 16, 16, dtype=torch.float64)
        crop = viz.crop_receptive_fields(ones, torch.tensor([0]), torch.tensor([i]), torch.tensor([j]),
                                         rf.size, rf.jump, rf.start)[0, 0]
        x = torch.rand(1, 3, 16, 16, dtype=torch.float64, requires_grad=True)
        stem(x)[0, 2, i, j].backward()
        support = (x.grad[0].abs().sum(0) > 0)
        # where the crop reads inside the image must be where the gradient is
        lo = int(rf.start - (rf.size - 1) / 2)
        window = torch.zeros(16, 16, dtype=torch.bool)
        r0, c0 = lo + i * rf.jump, lo + j * rf.jump
        window[max(r0, 0):r0 + rf.size, max(c0, 0):c0 + rf.size] = True
        assert torch.equal(support, window), (i, j)
        assert int(crop.sum()) == int(window.sum())  # the crop holds just those pixels, zeros elsewhere


def test_crop_errors():
    x = torch.rand(2, 1, 8, 8)
    one = torch.tensor([0])
    with pytest.raises(ValueError, match="whole pixel"):
        viz.crop_receptive_fields(x, one, one, one, size=4, jump=1, start=0.0)
    with pytest.raises(ValueError, match="one length"):
        viz.crop_receptive_fields(x, one, torch.tensor([0, 1]), one, size=3, jump=1, start=1.0)


# ---------------------------------------------------------------------------------------------- AUC

def test_auc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (200, 7), generator=g).double()  # many ties
    scores[:, 3] = torch.randn(200, generator=g)  # and one column without
    positive = torch.rand(200, generator=g) < 0.3
    got = viz.auc(scores, positive)
    ref = [roc_auc_score(positive.numpy(), scores[:, u].numpy()) for u in range(7)]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    assert viz.auc(scores[:, 3], positive).item() == pytest.approx(ref[3])
    # a perfect detector and its opposite
    assert viz.auc(positive.double(), positive).item() == 1.0
    assert viz.auc(-positive.double(), positive).item() == 0.0


def test_auc_errors():
    with pytest.raises(ValueError, match="positives and negatives"):
        viz.auc(torch.rand(5), torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool tensor"):
        viz.auc(torch.rand(5), torch.ones(5))
