"""Recurrent networks and language models (notebook 07; the captioner of 08 reuses them).

- :func:`rnn_step`, :func:`rnn_forward` — the vanilla RNN ``h_t = tanh(W_xh x_t + W_hh h_{t−1} + b)``,
  one step and unrolled over a sequence (checked against ``nn.RNN``);
- :func:`lstm_cell`, :func:`lstm_forward` — the LSTM step by step (forget, input, candidate, memory
  update, output), in PyTorch's gate order ``(i, f, g, o)`` with one summed bias (checked against
  ``nn.LSTMCell`` and ``nn.LSTM``);
- :func:`state_gradient_norms` — ``‖∂h_T/∂x_t‖`` for every ``t``: how much the last state still
  depends on each input (why plain RNNs forget);
- :func:`adding_problem` — Hochreiter & Schmidhuber's long-time-lag task; :class:`SequenceRegressor`;
- :class:`Vocab`, :class:`TokenLM` — tokens ↔ ids, and a recurrent model of P(next | previous);
- :func:`sampling_probs`, :func:`entropy`, :func:`sample` — temperature, Graves's *biased* and
  *primed* sampling;
- :func:`ngram_cross_entropy` — the smoothed n-gram baseline a language model must beat;
- :func:`copied_fraction` — how much of a sample is copied verbatim from the training text.

Shapes: a batch of sequences is ``[N, T, D]`` (batch first), hidden states ``[N, H]``, token ids
``[N, T]``, next-token scores ``[N, T, V]``.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks

# ----------------------------------------------------------------------------------------------
# The vanilla RNN
# ----------------------------------------------------------------------------------------------


def rnn_step(x: torch.Tensor, h: torch.Tensor, w_xh: torch.Tensor, w_hh: torch.Tensor,
             b: torch.Tensor) -> torch.Tensor:
    """One step ``h_t = tanh(W_xh x_t + W_hh h_{t−1} + b)``.

    Args:
        x (Tensor[N, D]): the input at time t; h (Tensor[N, H]): the previous state.
        w_xh (Tensor[H, D]), w_hh (Tensor[H, H]), b (Tensor[H]): ``nn.RNN``'s ``weight_ih_l0``,
            ``weight_hh_l0`` and ``bias_ih_l0 + bias_hh_l0``.

    Returns:
        Tensor[N, H]: the new state.
    """
    return torch.tanh(x @ w_xh.T + h @ w_hh.T + b)


def _check_sequence(x, h0, hidden: int) -> torch.Tensor:
    _checks.tensor(x)
    if x.ndim != 3:
        raise ValueError(f"x must be a batch of sequences [N, T, D], got shape {tuple(x.shape)}")
    if h0 is None:
        return x.new_zeros(x.shape[0], hidden)
    if h0.shape != (x.shape[0], hidden):
        raise ValueError(f"the initial state must be [N, H] = [{x.shape[0]}, {hidden}], got {tuple(h0.shape)}")
    return h0


def rnn_forward(x: torch.Tensor, w_xh: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor,
                h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The RNN unrolled: :func:`rnn_step` applied for ``t = 1 … T`` with the *same* weights.

    Args:
        x (Tensor[N, T, D]); h0 (Tensor[N, H], optional, zeros by default).

    Returns:
        ``(outputs, h_T)``: Tensor[N, T, H] (every state) and Tensor[N, H] (the last; ``h0`` when T = 0).
    """
    h = _check_sequence(x, h0, w_hh.shape[0])
    outputs = []
    for t in range(x.shape[1]):
        h = rnn_step(x[:, t], h, w_xh, w_hh, b)                       # [N, H]
        outputs.append(h)
    out = torch.stack(outputs, 1) if outputs else x.new_zeros(x.shape[0], 0, w_hh.shape[0])
    return out, h


# ----------------------------------------------------------------------------------------------
# The LSTM, step by step
# ----------------------------------------------------------------------------------------------


class Gates(NamedTuple):
    """The four gate activations of an LSTM step, each Tensor[N, H] (or [N, T, H] over a sequence)."""

    i: torch.Tensor  # input gate σ: how much of the candidate to write
    f: torch.Tensor  # forget gate σ: how much of the old memory to keep
    g: torch.Tensor  # candidate tanh: what could be written
    o: torch.Tensor  # output gate σ: how much of the memory to show


def lstm_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
              b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Gates]:
    """One LSTM step, as on the slides (Hochreiter & Schmidhuber 1997; with a forget gate):

    ``f = σ(W_f·[h, x] + b_f)``, ``i = σ(W_i·[h, x] + b_i)``, ``C̃ = tanh(W_C·[h, x] + b_C)``,
    ``C_t = f ∗ C_{t−1} + i ∗ C̃``, ``o = σ(W_o·[h, x] + b_o)``, ``h_t = o ∗ tanh(C_t)``.

    The four weight matrices are stacked in PyTorch's order ``(i, f, g, o)`` — not cs231n's
    ``(i, f, o, g)`` — and ``W·[h, x]`` is split into ``W_ih x + W_hh h``.

    Args:
        x (Tensor[N, D]), h (Tensor[N, H]), c (Tensor[N, H]): the input and the previous state.
        w_ih (Tensor[4H, D]), w_hh (Tensor[4H, H]), b (Tensor[4H]): ``nn.LSTMCell``'s ``weight_ih``,
            ``weight_hh`` and ``bias_ih + bias_hh`` (PyTorch keeps two biases; only their sum matters).

    Returns:
        ``(h_t, C_t, gates)``.
    """
    z = x @ w_ih.T + h @ w_hh.T + b                                      # [N, 4H]
    zi, zf, zg, zo = z.chunk(4, dim=1)                                   # each [N, H]
    i, f, g, o = torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg), torch.sigmoid(zo)
    c = f * c + i * g                                                    # forget that + memorise this
    h = o * torch.tanh(c)
    return h, c, Gates(i, f, g, o)


def lstm_forward(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b: torch.Tensor,
                 h0: torch.Tensor | None = None, c0: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], Gates]:
    """:func:`lstm_cell` unrolled over ``x (Tensor[N, T, D])``.

    Returns:
        ``(outputs [N, T, H], (h_T, C_T), gates)`` with each gate ``[N, T, H]`` — the same outputs as
        ``nn.LSTM(D, H, batch_first=True)`` with these weights.
    """
    hidden = w_hh.shape[1]
    h = _check_sequence(x, h0, hidden)
    c = _check_sequence(x, c0, hidden)
    outs, gates = [], []
    for t in range(x.shape[1]):
        h, c, g = lstm_cell(x[:, t], h, c, w_ih, w_hh, b)
        outs.append(h)
        gates.append(g)
    if not outs:
        empty = x.new_zeros(x.shape[0], 0, hidden)
        return empty, (h, c), Gates(empty, empty, empty, empty)
    stacked = Gates(*(torch.stack([g[k] for g in gates], 1) for k in range(4)))
    return torch.stack(outs, 1), (h, c), stacked


def lstm_weights(lstm: nn.LSTM | nn.LSTMCell, layer: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W_ih, W_hh, b_ih + b_hh)`` of an ``nn.LSTMCell`` or of one layer of an ``nn.LSTM``."""
    if isinstance(lstm, nn.LSTMCell):
        return lstm.weight_ih, lstm.weight_hh, lstm.bias_ih + lstm.bias_hh
    if isinstance(lstm, nn.LSTM):
        return (getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}"),
                getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}"))
    raise TypeError(f"expected an nn.LSTM or nn.LSTMCell, got {type(lstm).__name__}")


def set_forget_bias(lstm: nn.LSTM, value: float = 1.0) -> nn.LSTM:
    """Set the forget gate's total bias to ``value`` in every layer (Gers et al. 2000; Jozefowicz et
    al. 2015): with ``f ≈ σ(1) ≈ 0.73`` at initialisation the memory is kept, so gradients survive."""
    h = lstm.hidden_size
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith("bias_ih"):
                p[h:2 * h] = value
            elif name.startswith("bias_hh"):
                p[h:2 * h] = 0.0
    return lstm


# ----------------------------------------------------------------------------------------------
# Why plain RNNs forget
# ----------------------------------------------------------------------------------------------


def state_gradient_norms(rnn: nn.RNNBase, x: torch.Tensor) -> torch.Tensor:
    """``‖∂h_T/∂x_t‖_F`` for ``t = 1 … T``: how strongly the last state depends on each input.

    ``rnn``: an ``nn.RNN``/``nn.LSTM``/``nn.GRU`` with ``batch_first=True``; ``x (Tensor[1, T, D])``.
    The Jacobian of every unit of ``h_T`` is taken (one backward pass per hidden unit).

    Returns:
        Tensor[T]: the Frobenius norm of the ``[H, D]`` Jacobian at each step.
    """
    if not isinstance(rnn, nn.RNNBase) or not rnn.batch_first:
        raise TypeError("rnn must be an nn.RNN, nn.LSTM or nn.GRU built with batch_first=True")
    _checks.tensor(x)
    if x.ndim != 3 or x.shape[0] != 1:
        raise ValueError(f"x must be one sequence [1, T, D], got shape {tuple(x.shape)}")
    x = x.detach().clone().requires_grad_(True)
    out, _ = rnn(x)
    last = out[0, -1]                                                    # [H]
    sq = torch.zeros(x.shape[1], dtype=x.dtype)
    for k in range(last.shape[0]):
        (g,) = torch.autograd.grad(last[k], x, retain_graph=True)        # [1, T, D]
        sq += g[0].pow(2).sum(1).detach()
    return sq.sqrt()


def adding_problem(n: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Hochreiter & Schmidhuber's adding problem: ``n`` sequences of ``length`` steps.

    Each step carries a value ``u ~ U[0, 1]`` and a marker; exactly two markers are 1, one in the
    first half and one in the second, and the target is the sum of the two marked values. A model
    must carry the first marked value across up to ``length`` steps. Predicting the mean (1) for
    every sequence gives the baseline mean squared error ``Var(u₁ + u₂) = 1/6``.

    Returns:
        ``(x, y)``: Tensor[n, length, 2] (value, marker) and Tensor[n].
    """
    _checks.positive_int(n=n, length=length)
    if length < 2:
        raise ValueError(f"length must be at least 2 (one marker in each half), got {length}")
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, length, generator=g)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=g)
    second = torch.randint(half, length, (n,), generator=g)
    markers = torch.zeros(n, length)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    return torch.stack([values, markers], 2), values[rows, first] + values[rows, second]


class SequenceRegressor(nn.Module):
    """A recurrent layer (``"rnn"``: tanh, or ``"lstm"``) reading ``[N, T, D]``, then a linear map of
    its last state to one number per sequence: ``[N, T, D]`` → ``[N]``."""

    def __init__(self, kind: str = "lstm", in_features: int = 2, hidden: int = 64, forget_bias: float = 1.0):
        super().__init__()
        if kind not in ("rnn", "lstm"):
            raise ValueError(f"kind must be 'rnn' or 'lstm', got {kind!r}")
        _checks.positive_int(in_features=in_features, hidden=hidden)
        cls = nn.RNN if kind == "rnn" else nn.LSTM
        self.kind, self.rnn = kind, cls(in_features, hidden, batch_first=True)
        if kind == "lstm":
            set_forget_bias(self.rnn, forget_bias)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)                                             # [N, T, H]
        return self.head(out[:, -1])[:, 0]                               # [N]


# ----------------------------------------------------------------------------------------------
# Language models
# ----------------------------------------------------------------------------------------------


class Vocab:
    """Tokens ↔ integer ids. ``Vocab("hello")`` (characters) or ``Vocab(["<S>", "cat", ...])``."""

    def __init__(self, tokens: Sequence[str]):
        self.itos = sorted(set(tokens))
        if not self.itos:
            raise ValueError("a vocabulary needs at least one token")
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> torch.Tensor:
        unknown = sorted({t for t in tokens if t not in self.stoi})
        if unknown:
            raise ValueError(f"tokens not in the vocabulary: {unknown[:10]}")
        return torch.tensor([self.stoi[t] for t in tokens], dtype=torch.long)

    def decode(self, ids, sep: str = "") -> str:
        return sep.join(self.itos[int(i)] for i in ids)


class TokenLM(nn.Module):
    """P(next token | previous tokens): embedding → LSTM (or tanh RNN) → scores over the vocabulary.

    ``forward(ids [N, T], state=None)`` → ``(scores [N, T, V], state)``; the state lets
    :func:`sample` continue a sequence one token at a time.
    """

    def __init__(self, vocab_size: int, hidden: int = 128, layers: int = 1, embed: int | None = None,
                 kind: str = "lstm", dropout: float = 0.0):
        super().__init__()
        _checks.positive_int(vocab_size=vocab_size, hidden=hidden, layers=layers)
        if kind not in ("rnn", "lstm"):
            raise ValueError(f"kind must be 'rnn' or 'lstm', got {kind!r}")
        embed = embed or hidden
        self.embed = nn.Embedding(vocab_size, embed)
        cls = nn.LSTM if kind == "lstm" else nn.RNN
        self.rnn = cls(embed, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        if kind == "lstm":
            set_forget_bias(self.rnn, 1.0)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, ids: torch.Tensor, state=None):
        h, state = self.rnn(self.embed(ids), state)                       # [N, T, H]
        return self.out(h), state                                        # [N, T, V]


def next_token_loss(outputs, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position: ``outputs`` = ``(scores [N, T, V], state)`` or the
    scores alone, ``targets [N, T]`` (``F.cross_entropy`` wants the classes second: ``[N, V, T]``)."""
    scores = outputs[0] if isinstance(outputs, tuple) else outputs
    return F.cross_entropy(scores.transpose(1, 2), targets)


def sampling_probs(logits: torch.Tensor, temperature: float = 1.0, bias: float = 0.0) -> torch.Tensor:
    """``softmax(logits · (1 + bias) / temperature)`` over the last axis.

    ``temperature`` < 1 sharpens the distribution (→ argmax as it goes to 0), > 1 flattens it;
    Graves's (2013) *bias* ``b ≥ 0`` does the same by multiplying the logits by ``1 + b``: biased
    samples are more probable, "easier to read but less interesting".
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number > 0, got {temperature!r}")
    if not temperature > 0 or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r} "
                         "(for the most probable token, use argmax)")
    _checks.non_negative(bias=bias)
    return F.softmax(logits * ((1.0 + bias) / temperature), dim=-1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """``H(p) = −Σ p log p`` in nats over the last axis (0 log 0 = 0)."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


@torch.no_grad()
def sample(model: TokenLM, vocab: Vocab, length: int, prime: Sequence[str] = (), temperature: float = 1.0,
           bias: float = 0.0, generator: torch.Generator | None = None, start: str | None = None
           ) -> tuple[list[str], float]:
    """Draw ``length`` tokens from ``model``, one at a time, each fed back as the next input.

    ``prime``: real tokens read first (Graves's *primed* sampling: the model continues in their
    style); without a prime, ``start`` (e.g. ``"<S>"``) or the first token of the vocabulary begins.
    Returns the sampled tokens (without the prime) and their mean entropy (nats per token) of the
    distributions they were drawn from.
    """
    _checks.non_negative_int(length=length)
    device = _checks.model_device(model)
    model.eval()
    seed_tokens = list(prime) or [start if start is not None else vocab.itos[0]]
    scores, state = model(vocab.encode(seed_tokens)[None].to(device))
    logits = scores[0, -1]
    out, entropies = [], []
    for _ in range(length):
        p = sampling_probs(logits.double(), temperature, bias)
        entropies.append(float(entropy(p)))
        nxt = int(torch.multinomial(p.cpu(), 1, generator=generator))
        out.append(vocab.itos[nxt])
        scores, state = model(torch.tensor([[nxt]], device=device), state)
        logits = scores[0, -1]
    return out, (sum(entropies) / len(entropies) if entropies else float("nan"))


def ngram_cross_entropy(train: Sequence[str], test: Sequence[str], n: int, alpha: float = 0.1,
                        vocab_size: int | None = None) -> float:
    """Cross-entropy (nats per token) on ``test`` of an add-``alpha`` smoothed ``n``-gram model
    counted on ``train``:

    ``P(w | c) = (count(c, w) + α) / (count(c) + α V)`` with ``c`` the ``n − 1`` previous tokens.
    The first ``n − 1`` tokens of ``test`` are context only (not scored). ``n = 1`` is the unigram
    model; ``V`` defaults to the number of distinct tokens in ``train`` and ``test``.
    """
    _checks.positive_int(n=n)
    _checks.positive(alpha=alpha)
    if len(test) < n:
        raise ValueError(f"test must have at least n = {n} tokens, got {len(test)}")
    v = vocab_size or len(set(train) | set(test))
    k = n - 1
    ctx_counts: Counter = Counter()
    counts: Counter = Counter()
    for j in range(k, len(train)):
        c = tuple(train[j - k:j])
        ctx_counts[c] += 1
        counts[c + (train[j],)] += 1
    total = 0.0
    for j in range(k, len(test)):
        c = tuple(test[j - k:j])
        total -= math.log((counts[c + (test[j],)] + alpha) / (ctx_counts[c] + alpha * v))
    return total / (len(test) - k)


def copied_fraction(sample_text: str, train_text: str, k: int = 12) -> float:
    """The fraction of ``sample_text``'s characters that lie inside some ``k``-character substring
    also found verbatim in ``train_text`` (memorised passages, not new writing)."""
    _checks.positive_int(k=k)
    if len(sample_text) < k:
        return 0.0
    covered = [False] * len(sample_text)
    for s in range(len(sample_text) - k + 1):
        if train_text.find(sample_text[s:s + k]) >= 0:
            covered[s:s + k] = [True] * k
    return sum(covered) / len(sample_text)
