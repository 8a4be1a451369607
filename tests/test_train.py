"""cvdl.train: batching, the fit/evaluate loop, history and checkpoints."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cvdl import train


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CVDL_CACHE", str(tmp_path / "cache"))


def blobs(n=600, seed=0):
    """Three Gaussian blobs in 2-D: linearly separable, so a small net must learn them."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    y = torch.randint(0, 3, (n,), generator=g)
    x = centres[y] + 0.6 * torch.randn(n, 2, generator=g)
    return x, y


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def test_tensor_loader_visits_every_sample_once_per_epoch():
    x = torch.arange(10).float()[:, None]
    y = torch.arange(10)
    loader = train.TensorLoader(x, y, batch_size=3, shuffle=True, seed=1)
    assert len(loader) == 4
    epoch1 = torch.cat([yb for _, yb in loader])
    epoch2 = torch.cat([yb for _, yb in loader])
    assert sorted(epoch1.tolist()) == list(range(10)) == sorted(epoch2.tolist())
    assert epoch1.tolist() != epoch2.tolist()  # reshuffled
    for xb, yb in loader:
        assert torch.equal(xb[:, 0].long(), yb)  # inputs and labels stay paired
    dropped = train.TensorLoader(x, y, batch_size=3, drop_last=True)
    assert len(dropped) == 3 and sum(len(b[1]) for b in dropped) == 9
    doubled = train.TensorLoader(x, y, batch_size=4, transform=lambda b: 2 * b)
    assert torch.equal(next(iter(doubled))[0], 2 * x[:4])


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=torch.zeros(3, 2), y=torch.zeros(4)), "same length, got 3 and 4"),
    (dict(x=torch.zeros(0, 2), y=torch.zeros(0)), "empty dataset"),
    (dict(x=torch.zeros(3, 2), y=torch.zeros(3), batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(x=[1, 2], y=torch.zeros(2)), "x and y must be tensors, got list"),
])
def test_tensor_loader_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train.TensorLoader(**kwargs)


def test_fit_learns_and_evaluate_matches_a_direct_computation():
    x, y = blobs()
    xt, yt = blobs(300, seed=1)
    model = mlp()
    hist = train.fit(model, (x, y), (xt, yt), epochs=15, lr=0.05, batch_size=64, device="cpu", progress=False)
    assert len(hist) == 15 and hist["epoch"] == list(range(1, 16))
    assert hist["train_loss"][-1] < hist["train_loss"][0] / 3
    assert hist.last["val_acc"] > 0.97
    ev = train.evaluate(model, (xt, yt))
    with torch.no_grad():
        logits = model(xt)
    assert ev["loss"] == pytest.approx(F.cross_entropy(logits, yt).item(), rel=1e-5)
    assert ev["acc"] == pytest.approx((logits.argmax(1) == yt).float().mean().item())
    assert ev["n"] == 300 and hist.last["val_acc"] == pytest.approx(ev["acc"])
    assert torch.equal(train.predict(model, xt, batch_size=7), logits)


def test_fit_accepts_a_dataloader_and_trains_only_given_params():
    x, y = blobs()
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50, shuffle=True)
    model = mlp()
    first = model[0].weight.detach().clone()
    train.fit(model, dl, epochs=2, lr=0.05, device="cpu", progress=False, params=model[2].parameters())
    assert torch.equal(model[0].weight, first)  # frozen
    assert train.evaluate(model, dl)["n"] == 600


def test_checkpoint_is_loaded_for_the_same_settings_only():
    x, y = blobs()
    m1 = mlp()
    h1 = train.fit(m1, (x, y), epochs=3, lr=0.05, device="cpu", progress=False, checkpoint="blobs")
    assert not h1.loaded and h1.seconds > 0
    m2 = mlp()  # the same starting weights: the trained ones must come from the checkpoint
    h2 = train.fit(m2, (x, y), epochs=3, lr=0.05, device="cpu", progress=False, checkpoint="blobs")
    assert h2.loaded and h2.rows == h1.rows and h2.seconds == pytest.approx(h1.seconds)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    h3 = train.fit(mlp(), (x, y), epochs=4, lr=0.05, device="cpu", progress=False, checkpoint="blobs")
    assert not h3.loaded  # different settings → trained, saved under another key
    files = os.listdir(os.path.join(os.environ["CVDL_CACHE"], "checkpoints"))
    assert len(files) == 2 and all(f.startswith("blobs-") and f.endswith(".pt") for f in files)
    state = torch.load(os.path.join(os.environ["CVDL_CACHE"], "checkpoints", files[0]), map_location="cpu")
    assert all(v.device.type == "cpu" for v in state["model"].values())


@pytest.mark.parametrize("kwargs, message", [
    (dict(model="not a model"), "model must be a torch.nn.Module, got str"),
    (dict(epochs=-1), "epochs must be a non-negative integer, got -1"),
    (dict(lr=0), "lr must be a positive number, got 0"),
    (dict(optimizer="rmsprop2"), "optimizer must be 'adam', 'adamw', 'sgd'"),
    (dict(schedule="cosine"), "schedule must be 'onecycle' or None, got 'cosine'"),
    (dict(train="nonsense"), "data must be .x, y. tensors, an ImageSet"),
    (dict(checkpoint="a/b"), "checkpoint name must be a non-empty string without '/'"),
])
def test_fit_rejects_bad_arguments(kwargs, message):
    x, y = blobs(20)
    args = dict(model=mlp(), train=(x, y), epochs=1, device="cpu", progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        train.fit(args.pop("model"), args.pop("train"), **args)


@pytest.mark.parametrize("n", [1, 20, 40, 64, 100, 129, 256, 400])
def test_short_runs_of_any_length_train(n):
    """One-cycle scheduling must not break runs of a handful of steps (1 to 4 batches)."""
    x, y = blobs(n)
    hist = train.fit(mlp(), (x, y), epochs=1, batch_size=32, lr=0.01, device="cpu", progress=False)
    assert len(hist) == 1 and hist.last["train_loss"] == hist.last["train_loss"]  # not NaN


def test_checkpoint_key_depends_on_the_starting_weights():
    """Fine-tuning from pretrained weights and training from scratch must not share a checkpoint."""
    x, y = blobs()
    a = mlp()
    train.fit(a, (x, y), epochs=2, lr=0.05, device="cpu", progress=False, checkpoint="init")
    b = mlp()
    with torch.no_grad():
        b[0].weight.add_(1.0)  # other starting weights, same architecture and settings
    hist = train.fit(b, (x, y), epochs=2, lr=0.05, device="cpu", progress=False, checkpoint="init")
    assert not hist.loaded
    assert len(os.listdir(os.path.join(os.environ["CVDL_CACHE"], "checkpoints"))) == 2
