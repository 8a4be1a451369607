"""cvdl.attacks: FGSM, the box projection, Szegedy et al.'s box-constrained attack, matched noise,
MAP-Elites and gradient fooling — against autograd, closed forms, finite differences and SciPy."""
import copy
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cvdl.attacks import (average_distortion, box_constrained_attack, box_objective, fgsm,
                          gaussian_noise_at_distortion, gradient_fooling, input_gradient, map_elites,
                          minimise_box_objective, project_box)


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()


def linear(d=36, k=5, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k)).to(dtype).eval()


def two_blobs(n=200, seed=0):
    """A separable 2-class set of 6×6 images: bright left half (class 0) or bright right half (class 1)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.2 + 0.2 * torch.rand(n, 1, 6, 6, generator=g)
    x[y == 0, :, :, :3] += 0.4
    x[y == 1, :, :, 3:] += 0.4
    return x.clamp(0, 1), y


@functools.lru_cache(maxsize=None)
def _trained_linear(seed=0):
    x, y = two_blobs(seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert (model(x).argmax(1) == y).float().mean() == 1.0
    return model.eval().requires_grad_(False), x, y


def trained_linear(seed=0):
    """A 2-class linear model trained (once per session) to 100 % on :func:`two_blobs`."""
    return _trained_linear(seed)


# ---------------------------------------------------------------- FGSM

def test_fgsm_matches_autograd():
    model = small_cnn()
    x = torch.rand(6, 1, 8, 8)
    y = torch.randint(0, 5, (6,))
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xr), y), xr)  # mean reduction: same signs
    for eps in (0.0, 0.03, 0.25):
        assert torch.equal(fgsm(model, x, y, eps, clip=False), x + eps * g.sign())
        assert torch.equal(fgsm(model, x, y, eps), (x + eps * g.sign()).clamp(0, 1))
    adv = fgsm(model, x, y, 0.1)
    assert (adv - x).abs().max() <= 0.1 + 1e-7 and adv.min() >= 0 and adv.max() <= 1


def test_fgsm_linear_softmax_closed_form():
    # for scores W x + b, ∇ₓ CE = Wᵀ (softmax(W x + b) − onehot(y)): FGSM steps along its sign
    model = linear()
    W, b = model[1].weight, model[1].bias                          # [5, 36], [5]
    x = torch.rand(8, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 5, (8,))
    with torch.no_grad():
        p = torch.softmax(x.flatten(1) @ W.T + b, dim=1)            # [8, 5]
        grad = (p - F.one_hot(y, 5).double()) @ W                  # [8, 36]
    step = (fgsm(model, x, y, 0.5, clip=False) - x).flatten(1)
    assert torch.allclose(step, 0.5 * grad.sign(), atol=1e-12, rtol=0)
    # the scores move exactly by ε·W·sign(grad): a linear model is linear in its input
    with torch.no_grad():
        moved = model(x + step.view_as(x)) - model(x)
    assert torch.allclose(moved, 0.5 * grad.sign() @ W.T, atol=1e-12)


def test_fgsm_sign_matches_finite_differences():
    model = small_cnn().double()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 0.8 + 0.1
    y = torch.tensor([1, 3])
    step = fgsm(model, x, y, 1.0, clip=False) - x
    h = 1e-6
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for flat in torch.randperm(x[0].numel(), generator=gen)[:25].tolist():
        e = torch.zeros_like(x[0]).flatten()
        e[flat] = h
        e = e.view_as(x[0])
        for i in range(2):
            with torch.no_grad():
                up = F.cross_entropy(model((x[i] + e)[None]), y[i:i + 1])
                down = F.cross_entropy(model((x[i] - e)[None]), y[i:i + 1])
            fd = (up - down).item() / (2 * h)
            if abs(fd) > 1e-6:  # the sign is only defined where the derivative is not ~0
                assert math.copysign(1.0, fd) == torch.sign(step[i].flatten()[flat]).item()
                checked += 1
    assert checked > 10


def test_fgsm_flips_a_trained_model():
    model, x, y = trained_linear()
    adv = fgsm(model, x, y, 0.4)
    assert (model(adv).argmax(1) != y).float().mean() > 0.9
    assert (model(fgsm(model, x, y, 0.0)).argmax(1) == y).all()


def test_fgsm_rejects_bad_input():
    model = small_cnn()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, x, y, -0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fgsm(model, x * 2, y, 0.1)
    with pytest.raises(TypeError, match="float"):
        fgsm(model, (x * 255).to(torch.uint8), y, 0.1)
    with pytest.raises(ValueError, match="y must be"):
        fgsm(model, x, torch.tensor([0]), 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fgsm(model, torch.full((2, 1, 8, 8), float("nan")), y, 0.1)
    with pytest.raises(TypeError, match="eps must be a finite number >= 0"):
        fgsm(model, x, y, "0.1")
    with pytest.raises(TypeError, match="x must be a tensor"):
        fgsm(model, x.numpy(), y, 0.1)


# ---------------------------------------------------------------- an attack leaves the model as it was

def bn_cnn(seed=0):
    """A CNN with BatchNorm and Dropout, left in training mode with non-trivial running statistics."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5))
    with torch.no_grad():
        model(torch.rand(32, 1, 8, 8) * 0.5)       # training mode: updates the running statistics
    return model.train()


def _unchanged(model, before):
    assert model.training and all(m.training for m in model.modules()), "the model's mode must be restored"
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), \
        "the attack changed the model's state (BatchNorm running statistics?)"
    assert all(p.grad is None for p in model.parameters()), "the attack left gradients in the weights"


def test_fgsm_on_a_training_model_is_fgsm_in_eval_mode_and_changes_nothing():
    model = bn_cnn()
    before = copy.deepcopy(model.state_dict())
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 1, 8, 8, generator=g), torch.randint(0, 5, (6,), generator=g)
    adv = fgsm(model, x, y, 0.1)
    _unchanged(model, before)
    frozen = copy.deepcopy(model).eval()
    assert torch.equal(adv, fgsm(frozen, x, y, 0.1))                 # batch statistics not used
    assert torch.equal(input_gradient(model, x, y), input_gradient(frozen, x, y))
    _unchanged(model, before)


@pytest.mark.parametrize("attack", ["input_gradient", "minimise_box_objective", "box_constrained_attack",
                                    "gradient_fooling", "map_elites"])
def test_every_attack_leaves_a_training_model_unchanged(attack):
    model = bn_cnn()
    before = copy.deepcopy(model.state_dict())
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 1, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)
    frozen = copy.deepcopy(model).eval()
    runs = {
        "input_gradient": lambda m: input_gradient(m, x, y),
        "minimise_box_objective": lambda m: minimise_box_objective(m, x, y, 1.0, steps=3)[0],
        "box_constrained_attack": lambda m: box_constrained_attack(m, x, y, rounds=2, steps=3).x_adv,
        "gradient_fooling": lambda m: gradient_fooling(m, (1, 8, 8), 5, 3).images,
        "map_elites": lambda m: map_elites(m, (1, 8, 8), 5, 3, batch_size=4,
                                           generator=torch.Generator().manual_seed(1)).images,
    }
    out = runs[attack](model)
    _unchanged(model, before)
    assert torch.equal(out, runs[attack](frozen))                     # the same as in eval mode


# ---------------------------------------------------------------- the box and the distortion

def test_project_box_is_clamp_and_stays_in_box():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 7, 7, generator=g)
    r = 2 * torch.randn(5, 1, 7, 7, generator=g)
    p = project_box(x, r)
    assert torch.allclose(x + p, torch.clamp(x + r, 0, 1), atol=1e-7)
    assert (x + p).min() >= 0 and (x + p).max() <= 1
    inside = ((x + r) >= 0) & ((x + r) <= 1)
    assert torch.equal(p[inside], r[inside])               # feasible coordinates are untouched
    assert torch.equal(project_box(x, p), p)               # a projection: idempotent
    assert torch.allclose(x + project_box(x, r, -1.0, 2.0), torch.clamp(x + r, -1, 2), atol=1e-7)
    with pytest.raises(ValueError, match="same shape"):
        project_box(x, r[:2])
    with pytest.raises(ValueError, match="low < high"):
        project_box(x, r, 1.0, 0.0)
    with pytest.raises(TypeError, match="r must be a tensor"):
        project_box(x, r.numpy())


def _ulp(t: torch.Tensor) -> torch.Tensor:
    """The spacing of floats at |t| (towards larger magnitude)."""
    a = t.abs()
    return torch.nextafter(a, torch.full_like(a, math.inf)) - a


def test_project_box_lands_in_the_box_exactly():
    # the reported case: clamp(x + r) − x = −1.1 rounds, and 0.6 + (−1.1) = −0.5000000000000001 < low
    x, r = torch.tensor([0.6], dtype=torch.float64), torch.tensor([-5.0], dtype=torch.float64)
    y = (x + project_box(x, r, -0.5, 1.0)).item()
    assert -0.5 <= y <= 1.0 and abs(y + 0.5) <= math.ulp(0.5)
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for low, high in [(0.0, 1.0), (-0.5, 1.0), (-1.0, 2.0), (-0.5, 10.0), (-3.0, -1.0), (0.1, 0.2)]:
            x = (low + (high - low) * torch.rand(20_000, generator=g, dtype=torch.float64)).to(dtype)
            r = (4 * (high - low) * torch.randn(20_000, generator=g, dtype=torch.float64)).to(dtype)
            p = project_box(x, r, low, high)
            y, ref = x + p, torch.clamp(x + r, low, high)
            assert ((y >= low) & (y <= high)).all(), (dtype, low, high)      # in the box, exactly
            inside = ((x + r) >= low) & ((x + r) <= high)
            assert torch.equal(p[inside], r[inside])                         # feasible steps untouched
            # x + p moves in steps of p's last bit: it equals the clamp to within one of them ...
            assert ((y - ref).abs() <= _ulp(p)).all(), (dtype, low, high)
            if max(abs(low), abs(high)) <= 2 * min(abs(v) for v in (low, high) if v) or low == 0:
                assert ((y - ref).abs() <= _ulp(ref)).all(), (dtype, low, high)   # ... and of the clamp
            assert torch.equal(project_box(x, p, low, high), p)              # still idempotent


def test_average_distortion_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=g)
    x2 = torch.rand(4, 1, 28, 28, generator=g)
    want = np.sqrt(((x2 - x).numpy().reshape(4, -1) ** 2).sum(1) / 784)
    assert np.allclose(average_distortion(x, x2).numpy(), want, atol=1e-7)
    assert torch.allclose(average_distortion(x, x + 0.1), torch.full((4,), 0.1), atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        average_distortion(x, x2[:1])


def test_gaussian_noise_matches_the_distortion():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(50, 1, 12, 12)
    x[:, :, 3:9, 3:9] = torch.rand(50, 1, 6, 6, generator=g)   # MNIST-like: mostly black
    for target in (0.05, 0.1, 0.3):
        noisy, sigma = gaussian_noise_at_distortion(x, target, generator=torch.Generator().manual_seed(1))
        assert noisy.min() >= 0 and noisy.max() <= 1
        assert abs(average_distortion(x, noisy).mean().item() - target) < 1e-3 * target
        assert sigma > 1.2 * target   # clamping on the black background removes part of the noise
    noisy, sigma = gaussian_noise_at_distortion(x, 0.0)
    assert sigma == 0.0 and torch.equal(noisy, x)
    with pytest.raises(ValueError, match="distortion"):
        gaussian_noise_at_distortion(x, -0.1)


# ---------------------------------------------------------------- the box-constrained attack

def test_projected_adam_reaches_the_lbfgsb_minimum():
    # for a linear model the objective c‖r‖ + CE(W(x + r) + b, l) is convex: projected Adam and
    # SciPy's box-constrained L-BFGS-B (what Szegedy et al. used) must agree on its minimum
    from scipy.optimize import minimize

    model = linear(seed=1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 6, 6, generator=g, dtype=torch.float64)
    target = torch.tensor([0, 2, 4])
    c = 0.05  # small enough that the minimum is not at r = 0 (where ‖r‖ has a kink)
    r, curve = minimise_box_objective(model, x, target, c, steps=300, lr=0.02)
    assert ((x + r) >= 0).all() and ((x + r) <= 1).all()
    ours = box_objective(model, x, r, target, c).detach()
    assert curve[-1] < curve[0]
    for i in range(3):
        def f(v):
            rv = torch.tensor(v, dtype=torch.float64).view(1, 1, 6, 6).requires_grad_(True)
            val = box_objective(model, x[i:i + 1], rv, target[i:i + 1], c).sum()
            (grad,) = torch.autograd.grad(val, rv)
            return val.item(), grad.flatten().numpy()
        xi = x[i].flatten().numpy()
        ref = minimize(f, np.zeros(36), jac=True, method="L-BFGS-B", bounds=list(zip(-xi, 1 - xi)))
        assert abs(ours[i].item() - ref.fun) < 1e-3 * max(1.0, abs(ref.fun)), (ours[i].item(), ref.fun)


def test_box_attack_finds_the_minimal_perturbation_of_a_linear_model():
    # two classes, scores W x + b: the closest point of the other class is at distance
    # |w·x + b'| / ‖w‖ with w = W₁ − W₀ (when the box does not bind, as for these mid-grey images)
    model, _, _ = trained_linear()
    x = 0.4 + 0.2 * torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        pred = model(x).argmax(1)
        w = model[1].weight[1] - model[1].weight[0]
        margin = (x.flatten(1) @ w + model[1].bias[1] - model[1].bias[0]).abs()
    closest = margin / w.norm()                                    # [8]
    res = box_constrained_attack(model, x, 1 - pred, c_init=0.1, rounds=10, steps=100, lr=0.001)
    assert res.success.all()
    assert torch.equal(model(res.x_adv).argmax(1), 1 - pred)     # predictions flipped
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    found = (res.x_adv - x).flatten(1).norm(dim=1)
    assert (found >= closest * (1 - 1e-4)).all()                 # nothing beats the closed form
    assert (found <= closest * 1.05).all(), (found / closest)    # and the attack comes close to it


def test_box_attack_search_over_c():
    model, x, y = trained_linear()
    x, y = x[:16], y[:16]
    # c too large: ‖r‖ dominates and r stays at 0, so one round fails; the search lowers c until it succeeds
    one = box_constrained_attack(model, x, 1 - y, c_init=1e3, rounds=1, steps=50)
    many = box_constrained_attack(model, x, 1 - y, c_init=1e3, rounds=8, steps=50)
    assert not one.success.any() and torch.equal(one.x_adv, x) and one.c.isnan().all()
    assert many.success.all() and (many.c < 1e3).all()
    assert torch.equal(model(many.x_adv).argmax(1), 1 - y)
    assert many.c_history.shape == (8, 16) and len(many.history) == 8
    assert torch.allclose(many.c_history[1], torch.full((16,), 100.0))  # a failure at c = 1000 → ÷10
    # c small: success, so the next round tries ×10; keeping the best iterate never loses ground
    small = box_constrained_attack(model, x, 1 - y, c_init=1e-3, rounds=2, steps=50)
    assert torch.allclose(small.c_history[1], torch.full((16,), 1e-2))
    first = box_constrained_attack(model, x, 1 - y, c_init=1e-3, rounds=1, steps=50)
    assert (average_distortion(x, small.x_adv) <= average_distortion(x, first.x_adv) + 1e-7).all()


def test_box_attack_rejects_bad_input():
    model = small_cnn()
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="target"):
        box_constrained_attack(model, x, torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="c_init"):
        box_constrained_attack(model, x, torch.tensor([0, 1]), c_init=0)
    with pytest.raises(ValueError, match="rounds"):
        box_constrained_attack(model, x, torch.tensor([0, 1]), rounds=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        box_constrained_attack(model, x + 1, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="c must be"):
        minimise_box_objective(model, x, torch.tensor([0, 1]), -1.0)


# ---------------------------------------------------------------- fooling images

def test_map_elites_archive_invariants():
    model = small_cnn(seed=2)
    seen = []
    res = map_elites(model, (1, 8, 8), 5, 60, batch_size=16, generator=torch.Generator().manual_seed(0),
                     callback=lambda gen, logp: seen.append(logp.clone()))
    assert res.images.shape == (5, 1, 8, 8) and res.history.shape == (61, 5)
    assert res.images.min() >= 0 and res.images.max() <= 1
    assert (res.history[1:] >= res.history[:-1]).all()           # an elite is only ever replaced by a better one
    assert len(seen) == 60 and all((b >= a).all() for a, b in zip(seen, seen[1:]))
    with torch.no_grad():                                          # the archive's fitness is the elite's own
        p = torch.softmax(model(res.images), dim=1)
    assert torch.allclose(p.diagonal(), res.confidence, atol=1e-6)
    assert torch.equal(res.history[-1], res.confidence)
    assert (res.history[-1] > res.history[0]).any()               # and evolution did improve some class


def test_map_elites_improves_on_random_search():
    # the same number of model evaluations: evolution from the archive beats drawing fresh noise
    model = small_cnn(seed=2)
    evo = map_elites(model, (1, 8, 8), 5, 100, batch_size=16, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        noise = torch.rand(101 * 16, 1, 8, 8, generator=g)
        best_random = torch.softmax(model(noise), dim=1).max(0).values
    assert evo.confidence.log().mean() > best_random.log().mean()


def test_map_elites_rejects_bad_input():
    model = small_cnn()
    with pytest.raises(ValueError, match="num_classes"):
        map_elites(model, (1, 8, 8), 7, 3)
    with pytest.raises(ValueError, match="mutation_rate"):
        map_elites(model, (1, 8, 8), 5, 3, mutation_rate=0.0)
    with pytest.raises(ValueError, match="generations"):
        map_elites(model, (1, 8, 8), 5, -1)


def test_gradient_fooling_raises_every_class():
    model = small_cnn(seed=3)
    for init in ("zeros", "noise"):
        res = gradient_fooling(model, (1, 8, 8), 5, 50, lr=0.05, init=init,
                               generator=torch.Generator().manual_seed(0))
        assert res.images.min() >= 0 and res.images.max() <= 1
        assert (res.history[-1] > res.history[0]).all()
        with torch.no_grad():
            p = torch.softmax(model(res.images), dim=1)
        assert torch.allclose(p.diagonal(), res.confidence, atol=1e-6)
    with pytest.raises(ValueError, match="init"):
        gradient_fooling(model, (1, 8, 8), 5, 10, init="ones")
    with pytest.raises(ValueError, match="num_classes"):
        gradient_fooling(model, (1, 8, 8), 3, 10)


def test_gradient_fooling_chosen_classes():
    model = small_cnn(seed=3)
    every = gradient_fooling(model, (1, 8, 8), 5, 20, lr=0.05, init="grey")
    some = gradient_fooling(model, (1, 8, 8), 5, 20, lr=0.05, init="grey", classes=[3, 1])
    assert some.images.shape == (2, 1, 8, 8) and some.confidence.shape == (2,) and some.history.shape == (21, 2)
    # from a grey start the images are independent: the chosen rows equal the rows for all classes
    assert torch.allclose(some.images, every.images[[3, 1]], atol=1e-6)
    assert torch.allclose(some.confidence, every.confidence[[3, 1]], atol=1e-6)
    with torch.no_grad():
        p = torch.softmax(model(some.images), dim=1)
    assert torch.allclose(p[[0, 1], [3, 1]], some.confidence, atol=1e-6)
    same = gradient_fooling(model, (1, 8, 8), 5, 20, lr=0.05, init="grey", classes=torch.tensor([3, 1]))
    assert torch.equal(same.images, some.images)
    with pytest.raises(ValueError, match="classes"):
        gradient_fooling(model, (1, 8, 8), 5, 5, classes=[5])
    with pytest.raises(ValueError, match="classes"):
        gradient_fooling(model, (1, 8, 8), 5, 5, classes=[])
    with pytest.raises(TypeError, match="classes"):
        gradient_fooling(model, (1, 8, 8), 5, 5, classes=[1.5])
    with pytest.raises(TypeError, match="classes"):
        gradient_fooling(model, (1, 8, 8), 5, 5, classes="3")
    with pytest.raises(TypeError, match="classes"):
        gradient_fooling(model, (1, 8, 8), 5, 5, classes=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="classes"):
        gradient_fooling(model, (1, 8, 8), 5, 5, classes=torch.tensor([[0, 1]]))
