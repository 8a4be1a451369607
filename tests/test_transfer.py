"""cvdl.transfer: MNIST-M, the gradient-reversal layer, the DANN schedules, the domain probe."""
import math

import numpy as np
import pytest
import torch

from cvdl import transfer

torch.set_num_threads(1)


def test_blend_is_the_papers_difference():
    digits = np.array([[[0, 1], [200, 0]]], dtype=np.uint8)
    patches = np.array([[[[10, 20, 30], [40, 50, 60]], [[250, 0, 128], [5, 6, 7]]]], dtype=np.uint8)
    out = transfer.blend(digits, patches)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(out[0, 0, 0], [10, 20, 30])          # no digit: the patch
    np.testing.assert_array_equal(out[0, 0, 1], [215, 205, 195])       # digit (any ink > 0): 255 − patch
    np.testing.assert_array_equal(out[0, 1, 0], [5, 255, 127])
    with pytest.raises(ValueError, match="must agree"):
        transfer.blend(digits, patches[..., :2])


def test_random_patches_are_deterministic_and_from_disjoint_regions(monkeypatch):
    a, wa = transfer.random_patches(50, "train", seed=3)
    b, wb = transfer.random_patches(50, "train", seed=3)
    assert np.array_equal(a, b) and np.array_equal(wa, wb) and a.shape == (50, 28, 28, 3)
    assert set(wa) == set(range(len(transfer.PHOTO_POOL))) or len(set(wa)) > 5
    # every patch is a crop of its photo from the split's region: find it
    photos = transfer._photos()
    for split in ("train", "test"):
        p, w = transfer.random_patches(20, split, seed=1)
        for patch, j in zip(p, w):
            img = photos[j]
            cut = int(img.shape[1] * transfer.TRAIN_FRACTION)
            region = img[:, :cut] if split == "train" else img[:, cut:]
            win = np.lib.stride_tricks.sliding_window_view(region, (28, 28, 3))[:, :, 0]
            assert (win == patch).all(axis=(2, 3, 4)).any(), f"a {split} patch is not inside the {split} region"
    with pytest.raises(ValueError, match="split"):
        transfer.random_patches(2, "val", seed=0)


def test_mnist_m_is_generated_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CVDL_CACHE", str(tmp_path))
    monkeypatch.setenv("CVDL_UNAVAILABLE", "mnist")                    # the digits fallback: quick
    from cvdl import _fetch
    monkeypatch.setattr(_fetch, "_FAILED", {})                        # leave no remembered failure behind
    first = transfer.mnist_m("test")
    assert first.images.shape[1:] == (3, 28, 28) and first.images.dtype == torch.uint8
    assert "digits" in first.source and "generated" in first.source
    files = list((tmp_path / "generated").glob("mnistm-*-digits-test.npz"))
    assert len(files) == 1
    again = transfer.mnist_m("test")
    assert again.source.startswith("cache") and torch.equal(again.images, first.images)
    assert torch.equal(again.labels, first.labels)
    # the colour varies across images (photo patches), and the digit is still there
    x = first.images.float()
    assert x.std(dim=(0, 2, 3)).min() > 20
    from cvdl import data
    mnist = data.load_mnist("test")
    ink = mnist.images[:, 0] > 0
    inv = (255 - first.images.permute(0, 2, 3, 1)[ink].int())
    assert inv.shape[0] > 0 and inv.min() >= 0


def test_grad_reverse_forward_identity_backward_negated():
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    for lam in (0.0, 0.3, 1.0, 2.5):
        y = transfer.grad_reverse(x, lam)
        assert torch.equal(y, x)
        g = torch.randn_like(x)
        (gx,) = torch.autograd.grad(y, x, g)
        torch.testing.assert_close(gx, -lam * g)
    # gradcheck: finite differences see the identity, so R_λ alone must fail it, and R_λ plus a term
    # whose gradient is exactly (1 + λ)·I (and whose value is 0) must pass — its backward is −λ·I
    assert not torch.autograd.gradcheck(lambda t: transfer.grad_reverse(t, 1.0), (x,), raise_exception=False)
    for lam in (0.0, 0.5, 2.0):
        assert torch.autograd.gradcheck(lambda t: transfer.grad_reverse(t, lam) + (1 + lam) * (t - t.detach()), (x,))
    with pytest.raises(ValueError, match="lambd"):
        transfer.grad_reverse(x, -1.0)


def test_grad_reverse_inside_a_network_reverses_only_what_lies_below():
    torch.manual_seed(0)
    below, above = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)
    x = torch.randn(8, 3)
    grads = {}
    for lam in (0.0, 1.0):
        below.zero_grad(); above.zero_grad()
        above(transfer.grad_reverse(below(x), lam)).sum().backward()
        grads[lam] = (below.weight.grad.clone(), above.weight.grad.clone())
    below.zero_grad(); above.zero_grad()
    above(below(x)).sum().backward()
    torch.testing.assert_close(grads[1.0][0], -below.weight.grad)           # reversed below the layer
    torch.testing.assert_close(grads[1.0][1], above.weight.grad)            # untouched above it
    assert (grads[0.0][0] == 0).all()


def test_schedules_end_points_and_shape():
    assert transfer.dann_lambda(0.0) == 0.0
    assert transfer.dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1) and transfer.dann_lambda(1.0) > 0.9999
    ps = np.linspace(0, 1, 11)
    lam = [transfer.dann_lambda(p) for p in ps]
    assert all(a < b for a, b in zip(lam, lam[1:])) and all(0 <= v < 1 for v in lam)
    assert transfer.dann_lr(0.0) == 0.01 and transfer.dann_lr(1.0) == pytest.approx(0.01 / 11 ** 0.75)
    lr = [transfer.dann_lr(p) for p in ps]
    assert all(a > b for a, b in zip(lr, lr[1:]))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            transfer.dann_lambda(bad)


def test_dann_shapes_and_step_updates_what_it_should():
    torch.manual_seed(0)
    m = transfer.DANN()
    xs, xt = torch.rand(6, 3, 28, 28), torch.rand(6, 3, 28, 28)
    ys = torch.randint(0, 10, (6,))
    scores, dom = m(xs)
    assert scores.shape == (6, 10) and dom.shape == (6,)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    out = transfer.dann_step(m, opt, xs, ys, None, 0.5)
    assert math.isnan(out["domain_loss"]) and out["label_loss"] > 0
    moved = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert moved and not any(n.startswith("domain") for n in moved)     # source-only: the domain head idle
    out = transfer.dann_step(m, opt, xs, ys, xt, 0.5)
    assert out["domain_loss"] == pytest.approx(math.log(2), abs=0.3)
    moved = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("domain") for n in moved)


def test_domain_probe_accuracy_and_proxy_a_distance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 5, generator=g)
    same = torch.randn(300, 5, generator=g)
    apart = torch.randn(300, 5, generator=g) + 5.0
    acc_same, d_same = transfer.domain_probe(a, same)
    acc_apart, d_apart = transfer.domain_probe(a, apart)
    assert 0.35 < acc_same < 0.65 and abs(d_same) < 0.6
    assert acc_apart > 0.99 and d_apart == pytest.approx(2 * (1 - 2 * (1 - acc_apart)))
    with pytest.raises(ValueError, match="features"):
        transfer.domain_probe(a, torch.randn(4, 3))


def test_uncertainty_weights_recover_known_noise_levels():
    torch.manual_seed(0)
    w = transfer.UncertaintyWeights(2)
    assert torch.allclose(w.sigma, torch.ones(2))
    opt = torch.optim.Adam(w.parameters(), lr=0.05)
    mse = torch.tensor([0.01, 4.0])                                       # noise σ = 0.1 and 2
    for _ in range(2000):
        opt.zero_grad()
        w(mse).backward()
        opt.step()
    torch.testing.assert_close(w.sigma, mse.sqrt(), rtol=1e-2, atol=1e-3)  # the optimum: σ² = MSE
    with pytest.raises(ValueError, match="2 task losses"):
        w(torch.zeros(3))


def test_the_multitask_net_shares_its_trunk():
    net = transfer.MultiTaskNet(10, 784)
    main, aux = net(torch.rand(5, 3, 28, 28))
    assert main.shape == (5, 10) and aux.shape == (5, 784)
    (main.sum() + aux.sum()).backward()
    assert all(p.grad is not None for p in net.trunk.parameters())
    net.zero_grad()
    net(torch.rand(2, 3, 28, 28))[1].sum().backward()                  # the auxiliary loss alone
    assert net.main.weight.grad is None and all(p.grad is not None for p in net.trunk.parameters())


def test_adapt_runs_each_method_and_reloads_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("CVDL_CACHE", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    src = (torch.rand(40, 3, 28, 28, generator=g), torch.randint(0, 10, (40,), generator=g))
    tgt = (torch.rand(40, 3, 28, 28, generator=g), torch.randint(0, 10, (40,), generator=g))
    for method in transfer.METHODS:
        model, hist = transfer.adapt(method, src, tgt, tgt, steps=6, batch_size=8, eval_every=3, device="cpu",
                                     checkpoint=f"t-{method}", progress=False)
        assert hist["step"] == [3, 6] and not hist.loaded and 0 <= hist.last["target_acc"] <= 1
        assert math.isnan(hist.last["domain_loss"]) == (method != "dann")
        assert hist["lambda"][0] == pytest.approx(transfer.dann_lambda(2 / 6))
        again, h2 = transfer.adapt(method, src, tgt, tgt, steps=6, batch_size=8, eval_every=3, device="cpu",
                                   checkpoint=f"t-{method}", progress=False)
        assert h2.loaded and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="method"):
        transfer.adapt("both", src, tgt, steps=1)


def test_photo_index_names_each_test_images_background(tmp_path, monkeypatch):
    monkeypatch.setenv("CVDL_CACHE", str(tmp_path))
    monkeypatch.setenv("CVDL_UNAVAILABLE", "mnist")                    # the digits fallback: quick
    from cvdl import _fetch, data
    monkeypatch.setattr(_fetch, "_FAILED", {})
    images = transfer.mnist_m("test").images.permute(0, 2, 3, 1).numpy()
    ink = data.load_mnist("test").images[:, 0].numpy() > 0
    which = transfer.photo_index("test")
    assert which.shape == (len(images),) and set(which) <= set(range(len(transfer.PHOTO_POOL)))
    photos = transfer._photos()
    for i in range(6):
        img = photos[which[i]]
        region = img[:, int(img.shape[1] * transfer.TRAIN_FRACTION):]
        win = np.lib.stride_tricks.sliding_window_view(region, (28, 28, 3))[:, :, 0]    # [y, x, 28, 28, 3]
        # the background (no ink) of image i is a test-region crop of the photo photo_index names
        match = (win == images[i]) | ink[i][None, None, :, :, None]
        assert match.all(axis=(2, 3, 4)).any(), f"image {i}'s background is not from photo {which[i]}"
    with pytest.raises(ValueError, match="split"):
        transfer.photo_index("val")


def test_predict_and_accuracy_agree_with_the_scores():
    torch.manual_seed(0)
    m = transfer.DANN().eval()
    x, y = torch.rand(7, 3, 28, 28), torch.randint(0, 10, (7,))
    pred = transfer.predict(m, x, batch_size=3)
    with torch.no_grad():
        assert torch.equal(pred, m(x)[0].argmax(1))
    assert transfer.accuracy(m, x, y, batch_size=2) == pytest.approx(float((pred == y).float().mean()))
    assert any(isinstance(layer, torch.nn.BatchNorm2d) for layer in m.features)


def test_adapt_lambda_max_scales_the_schedule(tmp_path, monkeypatch):
    monkeypatch.setenv("CVDL_CACHE", str(tmp_path))
    g = torch.Generator().manual_seed(1)
    src = (torch.rand(20, 3, 28, 28, generator=g), torch.randint(0, 10, (20,), generator=g))
    tgt = (torch.rand(20, 3, 28, 28, generator=g), torch.randint(0, 10, (20,), generator=g))
    _, off = transfer.adapt("dann", src, tgt, steps=4, batch_size=4, eval_every=2, lambda_max=0.0, device="cpu",
                            progress=False)
    _, half = transfer.adapt("dann", src, tgt, steps=4, batch_size=4, eval_every=2, lambda_max=0.5, device="cpu",
                             progress=False)
    assert off["lambda"] == [0.0, 0.0] and all(np.isfinite(off["domain_loss"]))   # the domain head still trains
    assert half["lambda"] == pytest.approx([0.5 * transfer.dann_lambda(p) for p in (1 / 4, 3 / 4)])
    with pytest.raises(ValueError, match="lambda_max"):
        transfer.adapt("dann", src, tgt, steps=1, lambda_max=-1.0)
    empty = (torch.zeros(0, 3, 28, 28), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="0 target images"):            # not torch.randint's "from >= to"
        transfer.adapt("dann", src, empty, steps=1, device="cpu", progress=False)
