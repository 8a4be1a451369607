"""cvdl.seq against PyTorch's recurrent layers, brute force and hand computations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from cvdl import seq

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rnn_forward_matches_nn_rnn_in_float64():
    torch.manual_seed(0)
    rnn = nn.RNN(3, 5, batch_first=True).double()
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    h0 = torch.randn(4, 5, dtype=torch.float64)
    ref_out, ref_h = rnn(x, h0[None])
    out, h = seq.rnn_forward(x, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0, h0)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, ref_h[0], rtol=1e-12, atol=1e-12)


def test_lstm_cell_and_forward_match_pytorch_in_float64():
    torch.manual_seed(1)
    cell = nn.LSTMCell(3, 6).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    h, c = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    ref_h, ref_c = cell(x, (h, c))
    got_h, got_c, gates = seq.lstm_cell(x, h, c, *seq.lstm_weights(cell))
    torch.testing.assert_close(got_h, ref_h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_c, ref_c, rtol=1e-12, atol=1e-12)
    assert all(0 < float(g.detach().min()) and float(g.detach().max()) < 1 for g in (gates.i, gates.f, gates.o))
    torch.testing.assert_close(got_c, gates.f * c + gates.i * gates.g)          # the memory update
    lstm = nn.LSTM(3, 6, batch_first=True).double()
    xs = torch.randn(2, 9, 3, dtype=torch.float64)
    ref_out, (ref_hT, ref_cT) = lstm(xs)
    out, (hT, cT), g = seq.lstm_forward(xs, *seq.lstm_weights(lstm))
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((hT, cT), (ref_hT[0], ref_cT[0]), rtol=1e-12, atol=1e-12)
    assert g.f.shape == (2, 9, 6)


def test_cs231n_gate_order_would_not_match():
    """PyTorch stacks (i, f, g, o); swapping g and o (cs231n's order) gives other numbers."""
    torch.manual_seed(2)
    cell = nn.LSTMCell(2, 3).double()
    w_ih, w_hh, b = seq.lstm_weights(cell)
    perm = torch.cat([torch.arange(0, 6), torch.arange(9, 12), torch.arange(6, 9)])
    x, h, c = (torch.randn(1, n, dtype=torch.float64) for n in (2, 3, 3))
    wrong, _, _ = seq.lstm_cell(x, h, c, w_ih[perm], w_hh[perm], b[perm])
    assert not torch.allclose(wrong, cell(x, (h, c))[0])


def test_empty_sequences_and_bad_states():
    w = torch.zeros(4, 2), torch.zeros(4, 4), torch.zeros(4)
    out, h = seq.rnn_forward(torch.zeros(3, 0, 2), *w)
    assert out.shape == (3, 0, 4) and torch.equal(h, torch.zeros(3, 4))
    out, (h, c), g = seq.lstm_forward(torch.zeros(3, 0, 2), torch.zeros(16, 2), torch.zeros(16, 4), torch.zeros(16))
    assert out.shape == (3, 0, 4) and g.i.shape == (3, 0, 4)
    with pytest.raises(ValueError, match=r"\[N, T, D\]"):
        seq.rnn_forward(torch.zeros(3, 2), *w)
    with pytest.raises(ValueError, match=r"initial state must be \[N, H\] = \[3, 4\]"):
        seq.rnn_forward(torch.zeros(3, 5, 2), *w, h0=torch.zeros(3, 5))
    with pytest.raises(TypeError, match="LSTM"):
        seq.lstm_weights(nn.GRU(2, 3))


def test_forget_bias_is_set_in_the_sum_of_the_two_biases():
    lstm = seq.set_forget_bias(nn.LSTM(3, 4, 2, batch_first=True), 1.0)
    for layer in range(2):
        b = seq.lstm_weights(lstm, layer)[2]
        torch.testing.assert_close(b[4:8], torch.ones(4))


def test_state_gradient_norms_match_autograd_of_each_step():
    torch.manual_seed(3)
    rnn = nn.RNN(2, 3, batch_first=True).double()
    x = torch.randn(1, 5, 2, dtype=torch.float64)
    norms = seq.state_gradient_norms(rnn, x)
    jac = torch.autograd.functional.jacobian(lambda inp: rnn(inp)[0][0, -1], x)    # [H, 1, T, D]
    torch.testing.assert_close(norms, jac[:, 0].pow(2).sum((0, 2)).sqrt())
    assert norms.shape == (5,)
    with pytest.raises(TypeError, match="batch_first"):
        seq.state_gradient_norms(nn.RNN(2, 3), x)


def test_adding_problem_has_two_markers_one_per_half_and_the_sum_as_target():
    x, y = seq.adding_problem(200, 10, seed=4)
    assert x.shape == (200, 10, 2) and y.shape == (200,)
    marks = x[:, :, 1]
    assert torch.equal(marks.sum(1), torch.full((200,), 2.0))
    assert torch.equal(marks[:, :5].sum(1), torch.ones(200))
    torch.testing.assert_close((x[:, :, 0] * marks).sum(1), y)
    with pytest.raises(ValueError, match="at least 2"):
        seq.adding_problem(3, 1)
    big_x, big_y = seq.adding_problem(20000, 4, seed=0)
    assert abs(float(big_y.var()) - 1 / 6) < 0.01   # the constant predictor's MSE


def test_vocab_round_trip_and_unknown_tokens():
    v = seq.Vocab("hello world")
    assert len(v) == 8 and v.decode(v.encode("hello")) == "hello"
    words = seq.Vocab(["<S>", "cat", "sat", "<E>"])
    assert words.decode(words.encode(["<S>", "cat"]), sep=" ") == "<S> cat"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        v.encode("xyz")
    with pytest.raises(ValueError, match="at least one token"):
        seq.Vocab("")


def test_sampling_probs_temperature_and_bias():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    torch.testing.assert_close(seq.sampling_probs(logits, 0.5), torch.softmax(logits / 0.5, 0))
    torch.testing.assert_close(seq.sampling_probs(logits, 1.0, bias=1.0), torch.softmax(2 * logits, 0))
    ents = [float(seq.entropy(seq.sampling_probs(logits, t))) for t in (0.1, 0.5, 1.0, 2.0, 10.0)]
    assert ents == sorted(ents) and ents[-1] < math.log(4)
    assert float(seq.entropy(torch.tensor([1.0, 0.0]))) == 0.0
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            seq.sampling_probs(logits, bad)
    with pytest.raises(TypeError, match="temperature"):
        seq.sampling_probs(logits, "hot")
    with pytest.raises(ValueError, match="bias must be"):
        seq.sampling_probs(logits, 1.0, bias=-0.5)


def test_sample_is_reproducible_and_follows_the_model():
    torch.manual_seed(0)
    vocab = seq.Vocab("ab")
    model = seq.TokenLM(len(vocab), hidden=8)
    with torch.no_grad():                 # a model that always says "b" after anything, strongly
        model.out.weight.zero_()
        model.out.bias.copy_(torch.tensor([-20.0, 20.0]))
    tokens, ent = seq.sample(model, vocab, 30, prime="ab", generator=torch.Generator().manual_seed(0))
    assert tokens == ["b"] * 30 and ent < 1e-6
    a = seq.sample(seq.TokenLM(2, 8), vocab, 10, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    assert len(a[0]) == 10 and seq.sample(model, vocab, 0)[0] == []


def test_ngram_cross_entropy_against_brute_force_counting():
    train, test = list("abracadabra"), list("abrac")
    v = len(set(train) | set(test))
    # bigram, add-0.5: P(w | c) = (n(c, w) + .5) / (n(c) + .5 V), scored from the 2nd test token
    pairs = list(zip(train, train[1:]))
    want = -sum(math.log((pairs.count((c, w)) + 0.5) / (train[:-1].count(c) + 0.5 * v))
                for c, w in zip(test, test[1:])) / 4
    assert seq.ngram_cross_entropy(train, test, 2, alpha=0.5) == pytest.approx(want)
    uni = -sum(math.log((train.count(w) + 0.1) / (len(train) + 0.1 * v)) for w in test) / 5
    assert seq.ngram_cross_entropy(train, test, 1, alpha=0.1) == pytest.approx(uni)
    # tokens never seen in training get only the smoothing mass α / (N + αV)
    assert seq.ngram_cross_entropy(list("zz"), list("ab"), 1, vocab_size=3) == pytest.approx(math.log(2.3 / 0.1))
    with pytest.raises(ValueError, match="at least n = 3"):
        seq.ngram_cross_entropy(train, list("ab"), 3)


def test_copied_fraction():
    train = "the quick brown fox jumps over the lazy dog"
    assert seq.copied_fraction("quick brown fox", train, k=5) == 1.0
    assert seq.copied_fraction("zzzzzzzzzz", train, k=5) == 0.0
    assert seq.copied_fraction("quick zzzzz", train, k=5) == pytest.approx(6 / 11)   # "quick " is copied
    assert seq.copied_fraction("abc", train, k=5) == 0.0


def test_sequence_regressor_and_token_lm_shapes():
    reg = seq.SequenceRegressor("rnn", 2, 8)
    assert reg(torch.zeros(3, 6, 2)).shape == (3,)
    lm = seq.TokenLM(11, hidden=16, layers=2)
    scores, _ = lm(torch.zeros(2, 5, dtype=torch.long))
    assert scores.shape == (2, 5, 11)
    assert seq.next_token_loss((scores, None), torch.zeros(2, 5, dtype=torch.long)).ndim == 0
    with pytest.raises(ValueError, match="kind must be"):
        seq.SequenceRegressor("gru")
