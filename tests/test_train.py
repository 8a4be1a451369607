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


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(x=torch.zeros(3, 2), y=torch.zeros(4)), ValueError, "same length, got 3 and 4"),
    (dict(x=torch.zeros(0, 2), y=torch.zeros(0)), ValueError, "empty dataset"),
    (dict(x=torch.zeros(3, 2), y=torch.zeros(3), batch_size=0), ValueError, "batch_size must be a positive integer, got 0"),
    (dict(x=torch.zeros(3, 2), y=torch.zeros(3), batch_size=2.0), TypeError, "batch_size must be a positive integer, got 2.0"),
    (dict(x=[1, 2], y=torch.zeros(2)), TypeError, "x and y must be tensors .or dicts of tensors., got x of type list"),
    (dict(x=torch.zeros(3, 2), y={"a": torch.zeros(3), "b": torch.zeros(2)}), ValueError, "same length, got 2 and 3"),
])
def test_tensor_loader_rejects_bad_input(kwargs, error, message):
    with pytest.raises(error, match=message):
        train.TensorLoader(**kwargs)


def test_tensor_loader_batches_any_number_of_parts_and_dicts():
    x = torch.arange(10).float()[:, None]
    y = {"label": torch.arange(10), "box": torch.arange(10).float()[:, None].repeat(1, 4)}
    loader = train.TensorLoader(x, y, 2 * x, batch_size=4, shuffle=True, seed=3)
    seen = []
    for xb, yb, zb in loader:
        assert torch.equal(xb[:, 0].long(), yb["label"]) and torch.equal(yb["box"][:, 0], xb[:, 0])
        assert torch.equal(zb, 2 * xb)
        seen += yb["label"].tolist()
    assert sorted(seen) == list(range(10))
    only_x = train.TensorLoader(x, batch_size=4)
    assert torch.equal(next(iter(only_x)), x[:4])


def test_to_device_moves_every_tensor_of_any_structure():
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    batch = [{"x": torch.ones(2), "meta": "keep", "n": 3}, (torch.zeros(1), None), Pair(torch.ones(1), [torch.ones(1)])]
    moved = train.to_device(batch, "meta")
    assert moved[0]["x"].device.type == "meta" and moved[0]["meta"] == "keep" and moved[0]["n"] == 3
    assert moved[1][0].device.type == "meta" and moved[1][1] is None and isinstance(moved[1], tuple)
    assert isinstance(moved[2], Pair) and moved[2].a.device.type == "meta" and moved[2].b[0].device.type == "meta"
    assert train.batch_size_of({"boxes": torch.zeros(5, 4)}) == 5
    assert train.batch_size_of([{"boxes": torch.zeros(3, 4)}, {"boxes": torch.zeros(1, 4)}]) == 2
    assert train.batch_size_of((torch.zeros(7, 2), torch.zeros(7))) == 7
    with pytest.raises(ValueError, match="cannot tell the batch size of str"):
        train.batch_size_of("abc")


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
    # batches of 7 in order give the full batch's outputs (to float rounding: GEMM kernels differ by size)
    torch.testing.assert_close(train.predict(model, xt, batch_size=7), logits, rtol=1e-6, atol=1e-6)


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


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(model="not a model"), TypeError, "model must be a torch.nn.Module, got str"),
    (dict(epochs=-1), ValueError, "epochs must be a non-negative integer, got -1"),
    (dict(epochs=1.5), TypeError, "epochs must be a non-negative integer, got 1.5"),
    (dict(lr=0), ValueError, "lr must be a positive number, got 0"),
    (dict(optimizer="rmsprop2"), ValueError, "optimizer must be 'adam', 'adamw', 'sgd'"),
    (dict(schedule="cosine"), ValueError, "schedule must be 'onecycle' or None, got 'cosine'"),
    (dict(train="nonsense"), TypeError, "data must be .x, y. tensors, an ImageSet"),
    (dict(train=iter([(torch.zeros(2, 2), torch.zeros(2).long())])), TypeError, "re-iterable"),
    (dict(checkpoint="a/b"), ValueError, "checkpoint name must be a non-empty string without '/'"),
    (dict(clip_grad=-1.0), ValueError, "clip_grad must be a positive number"),
])
def test_fit_rejects_bad_arguments(kwargs, error, message):
    x, y = blobs(20)
    args = dict(model=mlp(), train=(x, y), epochs=1, device="cpu", progress=False)
    args.update(kwargs)
    with pytest.raises(error, match=message):
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


# ----------------------------------------------------------------------------------------------
# One loop for every task: dict targets, sequences, triplets
# ----------------------------------------------------------------------------------------------


class ClassAndBox(nn.Module):
    """A toy localiser: one image → a class score vector and a box, returned as a dict."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.cls, self.box = nn.Linear(32, 2), nn.Linear(32, 4)

    def forward(self, x):
        h = self.body(x)
        return {"scores": self.cls(h), "boxes": self.box(h)}


def squares(n=400, seed=0):
    """8×8 images holding one bright square; label: is it in the top half; box: where it is."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 8, 8)
    top = torch.randint(0, 6, (n,), generator=g)
    left = torch.randint(0, 6, (n,), generator=g)
    for i in range(n):
        x[i, 0, top[i]:top[i] + 3, left[i]:left[i] + 3] = 1.0
    boxes = torch.stack([left, top, left + 3, top + 3], 1).float() / 8
    return x, {"labels": (top < 3).long(), "boxes": boxes}


def box_loss(out, target):
    return F.cross_entropy(out["scores"], target["labels"]) + F.l1_loss(out["boxes"], target["boxes"])


def box_error(out, target):
    return (out["boxes"] - target["boxes"]).abs().mean()


def test_fit_trains_a_model_with_dict_outputs_and_dict_targets():
    x, y = squares()
    xt, yt = squares(200, seed=1)
    torch.manual_seed(0)
    model = ClassAndBox()
    metrics = {"acc": lambda out, t: train.accuracy(out["scores"], t["labels"]), "box_l1": box_error}
    hist = train.fit(model, (x, y), (xt, yt), epochs=20, lr=1e-2, batch_size=50, loss_fn=box_loss,
                     metrics=metrics, device="cpu", progress=False)
    first, last = hist.rows[0], hist.last
    assert set(last) >= {"train_loss", "train_acc", "train_box_l1", "val_loss", "val_acc", "val_box_l1"}
    assert last["val_acc"] > 0.95 and last["val_box_l1"] < 0.5 * first["val_box_l1"]
    # the reported numbers are what a direct computation gives
    with torch.no_grad():
        out = model(xt)
    ev = train.evaluate(model, (xt, yt), loss_fn=box_loss, metrics=metrics)
    assert ev["loss"] == pytest.approx(box_loss(out, yt).item(), rel=1e-5)
    assert ev["box_l1"] == pytest.approx(box_error(out, yt).item(), rel=1e-5)
    assert ev["n"] == 200 and ev["acc"] == pytest.approx(last["val_acc"])
    # the same data as a list of batches whose targets are lists of per-image dicts (torchvision's
    # detection format) trains with a forward that stacks them
    batches = [(x[i:i + 50], [{"labels": y["labels"][j], "boxes": y["boxes"][j]} for j in range(i, i + 50)])
               for i in range(0, 400, 50)]

    def stacked(model, batch):
        images, targets = batch
        return model(images), {k: torch.stack([t[k] for t in targets]) for k in ("labels", "boxes")}

    torch.manual_seed(0)
    again = ClassAndBox()
    h2 = train.fit(again, batches, epochs=2, lr=1e-2, loss_fn=box_loss, forward=stacked, metrics={},
                   device="cpu", progress=False)
    assert len(h2) == 2 and h2.last["train_loss"] < h2.rows[0]["train_loss"]


class NextToken(nn.Module):
    """A tiny recurrent language model: tokens [N, T] → next-token scores [N, T, V]."""

    def __init__(self, vocab=5, hidden=32):
        super().__init__()
        self.emb, self.rnn, self.out = nn.Embedding(vocab, 16), nn.GRU(16, hidden, batch_first=True), nn.Linear(hidden, vocab)

    def forward(self, tokens):
        h, _ = self.rnn(self.emb(tokens))
        return self.out(h)


def sequence_loss(scores, targets):  # scores [N, T, V], targets [N, T]; cross_entropy wants [N, V, T]
    return F.cross_entropy(scores.transpose(1, 2), targets)


def token_accuracy(scores, targets):  # averaged over tokens, not sequences: (mean, number of tokens)
    return (scores.argmax(-1) == targets).float().mean(), targets.numel()


def test_fit_trains_a_sequence_model_with_per_token_metrics():
    # sequences that count up modulo 5 from a random start: the next token is always predictable
    g = torch.Generator().manual_seed(0)
    start = torch.randint(0, 5, (300, 1), generator=g)
    seq = (start + torch.arange(13)) % 5                               # [300, 13]
    inputs, targets = seq[:, :-1], seq[:, 1:]                          # [300, 12] each
    torch.manual_seed(0)
    model = NextToken()
    hist = train.fit(model, (inputs[:240], targets[:240]), (inputs[240:], targets[240:]), epochs=15, lr=1e-2,
                     batch_size=40, loss_fn=sequence_loss, metrics={"token_acc": token_accuracy},
                     clip_grad=1.0, device="cpu", progress=False)
    assert hist.last["val_token_acc"] > 0.99, hist.last
    assert hist.last["train_loss"] < 0.1 * hist.rows[0]["train_loss"]
    ev = train.evaluate(model, (inputs[240:], targets[240:]), loss_fn=sequence_loss,
                        metrics={"token_acc": token_accuracy}, batch_size=7)   # uneven batches
    with torch.no_grad():
        scores = model(inputs[240:])
    assert ev["token_acc"] == pytest.approx((scores.argmax(-1) == targets[240:]).float().mean().item())
    assert ev["loss"] == pytest.approx(sequence_loss(scores, targets[240:]).item(), rel=1e-5)


def test_fit_trains_triplets_with_a_forward_of_its_own():
    x, y = blobs(300)
    order = torch.argsort(y)
    anchors = x
    positives = x[torch.randperm(300, generator=torch.Generator().manual_seed(1))]
    # a positive of the same class and a negative of another, for every anchor
    same = {c: x[y == c] for c in range(3)}
    g = torch.Generator().manual_seed(2)
    positives = torch.stack([same[int(c)][torch.randint(len(same[int(c)]), (1,), generator=g)][0] for c in y])
    negatives = torch.stack([same[(int(c) + 1) % 3][torch.randint(len(same[(int(c) + 1) % 3]), (1,), generator=g)][0]
                             for c in y])
    del order

    def embed_all(model, batch):
        a, p, n = (model(t) for t in batch)
        return (a, p, n), None

    def triplet(out, _):
        return F.triplet_margin_loss(*out, margin=1.0)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 4))
    hist = train.fit(net, (anchors, positives, negatives), epochs=10, lr=1e-2, batch_size=50, loss_fn=triplet,
                     forward=embed_all, device="cpu", progress=False)
    assert hist.last["train_loss"] < 0.2 * hist.rows[0]["train_loss"]


def test_train_one_epoch_reads_the_device_once_per_epoch_not_once_per_step(monkeypatch):
    """A GPU must not wait for the host every step: no .item() / float() per batch."""
    x, y = blobs(400)
    calls = {"n": 0}
    for name in ("item", "__float__", "__int__", "__bool__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(self, *a, _original=original, **k):
            calls["n"] += 1
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counting)

    def one_epoch(batch_size):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        calls["n"] = 0
        out = train.train_one_epoch(model, train.TensorLoader(x, y, batch_size=batch_size), F.cross_entropy, opt,
                                    device=torch.device("cpu"), metrics={"acc": train.accuracy})
        return calls["n"], out

    few, out_few = one_epoch(200)    # 2 steps
    many, out_many = one_epoch(10)   # 40 steps
    assert many == few, f"{many} host reads for 40 steps vs {few} for 2: the loop reads the device every step"
    assert out_many["n"] == out_few["n"] == 400


def _key_after(loss_fn):
    x, y = blobs(40)
    train.fit(mlp(), (x, y), epochs=1, device="cpu", progress=False, loss_fn=loss_fn, checkpoint="key")
    return sorted(os.listdir(os.path.join(os.environ["CVDL_CACHE"], "checkpoints")))


def test_checkpoint_keys_follow_what_a_loss_does_not_its_name():
    def loss(s, y):
        return F.cross_entropy(s, y)
    first = _key_after(loss)
    renamed = loss
    renamed.__name__ = "something_else"
    assert _key_after(renamed) == first            # a new name, the same function: the same checkpoint

    def loss(s, y):  # noqa: F811 - the same name, another function
        return F.cross_entropy(s, y, label_smoothing=0.1)
    assert len(_key_after(loss)) == 2

    class Penalised:                                # no __name__, no repr: described by code and fields
        def __init__(self, lam):
            self.lam = lam

        def __call__(self, s, y):
            return F.cross_entropy(s, y) + self.lam * s.pow(2).mean()
    assert len(_key_after(Penalised(0.1))) == 3
    assert len(_key_after(Penalised(0.1))) == 3     # the same again: loaded, not a new key
    assert len(_key_after(Penalised(1.0))) == 4
    assert train.describe(Penalised(0.1)) == train.describe(Penalised(0.1))
    assert " at 0x" not in train.describe(Penalised(0.1))
