"""Image captioning and image↔sentence retrieval (notebook 08).

- :func:`scenes` — the course's generated captioned-scene set: two shapes of several colours
  and sizes in a spatial relation, four paraphrased reference captions per image, fixed splits;
  :func:`caption_vocab`, :func:`encode_captions` turn captions into padded token ids;
- :func:`encoder`, :func:`grid_features` — a frozen CNN (ImageNet MobileNet-v2 when its weights
  are here, otherwise the course's CIFAR-10 network) giving a ``grid × grid`` feature map;
- :class:`ShowAndTell` — Vinyals et al.'s captioner: the image vector is the LSTM's first input,
  then the words; ``blind=True`` is the same network without the image (the language-model
  baseline); :func:`teacher_forcing_loss`, :func:`sequence_logprob`;
- decoding: :func:`greedy`, :func:`beam_search` (with length normalisation) and
  :func:`brute_force` (every sequence, for checking the beam on tiny models), each caption with
  its log-probability;
- :func:`bleu` — corpus BLEU-1..4 with the brevity penalty and several references per image,
  matching NLTK's ``corpus_bleu`` (unsmoothed);
- retrieval: :class:`JointEmbedding`, :func:`ranking_loss` (the hinge loss of Karpathy &
  Fei-Fei / Kiros et al.), :func:`recall_at_k`.

Shapes: images ``[N, 3, H, W]``, grid features ``[N, C, g, g]``, caption ids ``[N, L]`` laid out
``<S> w1 … wk <E> <P> …``, next-token scores ``[N, T, V]``. Special tokens: ``<S>`` (start),
``<E>`` (end), ``<P>`` (padding).
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks
from .seq import Vocab, set_forget_bias

BOS, EOS, PAD = "<S>", "<E>", "<P>"

# ----------------------------------------------------------------------------------------------
# The captioned-scene set
# ----------------------------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (215, 45, 40), "green": (40, 160, 60), "blue": (45, 85, 215), "yellow": (235, 195, 30)}
SIZES = {"small": 6, "large": 11}          # half-width in pixels, on a 64 × 64 image
RELATIONS = ("left", "right", "above", "below")
SPLITS = {"train": (4000, 0), "val": (500, 1), "test": (500, 2)}   # default size, seed
IMAGE_SIZE = 64


@dataclass
class CaptionSet:
    """Images ``uint8 [N, 3, 64, 64]``; ``captions[i]``: the reference captions of image ``i``
    (lower-case strings, words separated by single spaces); ``facts[i]``: what was drawn."""

    images: torch.Tensor
    captions: list[list[str]]
    facts: list[dict]
    split: str
    seed: int

    def __len__(self) -> int:
        return len(self.captions)

    def __repr__(self) -> str:
        return (f"CaptionSet({self.split!r}, {len(self)} images {tuple(self.images.shape[1:])}, "
                f"{len(self.captions[0]) if self.captions else 0} captions each, seed {self.seed})")

    def float(self) -> torch.Tensor:
        return self.images.float() / 255.0


def _phrase(obj: dict, sized: bool = True) -> str:
    return " ".join(([obj["size"]] if sized else []) + [obj["colour"], obj["shape"]])


def describe_scene(a: dict, b: dict, relation: str) -> list[str]:
    """The four reference captions of "``a`` is ``relation`` ``b``" (relation: left / right /
    above / below, ``a`` being the first object): two that name ``a`` first, one that names
    ``b`` first, and one short one without the sizes."""
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    A, B, a_, b_ = _phrase(a), _phrase(b), _phrase(a, False), _phrase(b, False)
    if relation in ("left", "right"):
        other = "right" if relation == "left" else "left"
        return [f"a {A} to the {relation} of a {B}", f"a {B} to the {other} of a {A}",
                f"a {a_} {relation} of a {b_}", f"there is a {B} and a {A} to its {relation}"]
    other = "below" if relation == "above" else "above"
    return [f"a {A} {relation} a {B}", f"a {B} {other} a {A}", f"a {a_} {relation} a {b_}",
            f"there is a {B} and a {A} {relation} it"]


def _draw(img: np.ndarray, shape: str, cx: float, cy: float, r: float, rgb) -> None:
    H, W = img.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        mask = dx ** 2 + dy ** 2 <= r ** 2
    elif shape == "square":
        mask = (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    else:  # an upward triangle inscribed in the circle of radius r
        mask = (dy <= r * 0.6) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.62)
    img[mask] = rgb


def scenes(split: str = "train", n: int | None = None) -> CaptionSet:
    """The generated captioned-scene set (no download: drawn from a fixed seed per split).

    Each 64 × 64 image holds two shapes (circle / square / triangle; red / green / blue /
    yellow; small / large; never the same colour *and* shape) side by side or one above the
    other, at jittered positions on a noisy grey background, with four paraphrased reference
    captions (:func:`describe_scene`). Splits: ``"train"`` (4 000 images, seed 0), ``"val"``
    (500, seed 1), ``"test"`` (500, seed 2); ``n`` keeps the first ``n`` of the split (the same
    images at any ``n``).
    """
    _, seed, size = _checks.split_size(split, SPLITS, n, "images")
    rng = np.random.default_rng(1000 + seed)
    S, names = IMAGE_SIZE, list(COLOURS)
    images = np.empty((size, S, S, 3), dtype=np.uint8)
    captions, facts = [], []
    for i in range(size):
        img = np.clip(rng.normal(200, 12, (S, S, 1)), 0, 255).repeat(3, axis=2).astype(np.uint8)
        while True:
            a, b = ({"shape": SHAPES[rng.integers(3)], "colour": names[rng.integers(4)],
                     "size": ("small", "large")[rng.integers(2)]} for _ in range(2))
            if (a["shape"], a["colour"]) != (b["shape"], b["colour"]):
                break
        relation = RELATIONS[rng.integers(4)]
        # a goes first along the relation's axis: left of / above b, or right of / below b
        lo, hi = rng.uniform(12, 22), rng.uniform(42, 52)         # positions along the axis
        across = rng.uniform(16, 48) + np.array([0.0, rng.uniform(-8, 8)])   # across it: nearly aligned
        first, second = (lo, hi) if relation in ("left", "above") else (hi, lo)
        if relation in ("left", "right"):
            (ax, ay), (bx, by) = (first, across[0]), (second, across[1])
        else:
            (ax, ay), (bx, by) = (across[0], first), (across[1], second)
        for obj, (x, y) in ((a, (ax, ay)), (b, (bx, by))):
            _draw(img, obj["shape"], x, y, SIZES[obj["size"]], COLOURS[obj["colour"]])
        images[i] = img
        captions.append(describe_scene(a, b, relation))
        facts.append({"a": a, "b": b, "relation": relation, "a_xy": (ax, ay), "b_xy": (bx, by)})
    return CaptionSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), captions, facts, split, seed)


def caption_vocab() -> Vocab:
    """Every word the scene captions use, with ``<S>``, ``<E>`` and ``<P>``."""
    words = {BOS, EOS, PAD, "a", "to", "the", "of", "there", "is", "and", "its", "it", *RELATIONS,
             *SHAPES, *COLOURS, *SIZES}
    return Vocab(sorted(words))


PAD_ID = caption_vocab().stoi[PAD]


def encode_captions(vocab: Vocab, captions: Sequence[str], length: int | None = None) -> torch.Tensor:
    """Captions → ids ``[M, L]``: ``<S> w1 … wk <E>`` padded with ``<P>`` to ``length`` (default:
    the longest caption + 2)."""
    tokens = [[BOS, *c.split(), EOS] for c in captions]
    longest = max((len(t) for t in tokens), default=2)
    length = longest if length is None else length
    if length < longest:
        raise ValueError(f"length={length} is shorter than the longest caption ({longest} tokens with <S> and <E>)")
    out = torch.full((len(tokens), length), vocab.stoi[PAD], dtype=torch.long)
    for i, t in enumerate(tokens):
        out[i, :len(t)] = vocab.encode(t)
    return out


def words(vocab: Vocab, ids) -> list[str]:
    """Token ids → the caption's words, without ``<S>``, stopping at ``<E>``, skipping ``<P>``."""
    out = []
    for i in ids:
        w = vocab.itos[int(i)]
        if w == EOS:
            break
        if w not in (BOS, PAD):
            out.append(w)
    return out


# ----------------------------------------------------------------------------------------------
# The encoder: a frozen CNN's feature map
# ----------------------------------------------------------------------------------------------


def encoder(smoke: bool = False, device=None) -> tuple[nn.Module, str]:
    """``(extractor, note)``: a frozen CNN mapping pixels in [0, 1] ``[N, 3, H, W]`` to a feature
    map — MobileNet-v2's ImageNet features up to block 13 (96 channels, stride 16) when its
    weights are here, otherwise the course's CIFAR-10 network up to its third block (128
    channels, stride 8; ``smoke`` uses its small version, 32 channels). The note says which."""
    from . import zoo

    net, note = zoo.imagenet_model("mobilenet_v2", device=device)
    if net is not None:
        ext = nn.Sequential(net.model.normalize, *net.model.features[:14])
        return ext.eval().requires_grad_(False), note + " — features up to block 13"
    model, info = zoo.course_classifier("cifar10", smoke=smoke, device=device)
    ext = model[:22].eval().requires_grad_(False)
    return ext, f"{note} The encoder is the course's CIFAR-10 CNN up to its third block: {info}."


@torch.no_grad()
def grid_features(extractor: nn.Module, images: torch.Tensor, grid: int = 4, batch_size: int = 250
                  ) -> torch.Tensor:
    """``extractor``'s feature map of ``images`` (float in [0, 1], ``[N, 3, H, W]``), average-
    pooled to ``[N, C, grid, grid]``, on the CPU — computed once, so the captioner trains on
    stored features (the encoder is frozen)."""
    _checks.images(images, "images")
    _checks.positive_int(grid=grid, batch_size=batch_size)
    dev = _checks.model_device(extractor)
    out = [F.adaptive_avg_pool2d(extractor(images[i:i + batch_size].to(dev)), grid).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# Show and Tell
# ----------------------------------------------------------------------------------------------


class ShowAndTell(nn.Module):
    """CNN features → LSTM → words (Vinyals et al., 2015).

    The image's features ``[N, C, g, g]`` go through a 1 × 1 convolution (``C → reduce``, keeping
    *where* things are) and a linear layer to a vector the size of a word embedding, which is
    the LSTM's input at step −1; then ``<S>``, ``w1``, … are fed and each step scores the next
    word. ``blind=True``: the same network that never sees the image (its LSTM starts from zero)
    — a language model of captions, the baseline a captioner must beat.

    - ``forward(feats, tokens [N, T])`` → scores ``[N, T, V]`` (teacher forcing);
    - ``start(feats)`` → the LSTM state after the image; ``step(tokens [B], state)`` →
      ``(log_probs [B, V], state)``; ``select(state, idx)`` keeps the rows ``idx`` of a state —
      what decoding needs.
    """

    def __init__(self, feat_shape: Sequence[int], vocab_size: int, embed: int = 64, hidden: int = 256,
                 reduce: int = 32, blind: bool = False, dropout: float = 0.0):
        super().__init__()
        C, g1, g2 = (int(v) for v in feat_shape)
        _checks.positive_int(vocab_size=vocab_size, embed=embed, hidden=hidden, reduce=reduce)
        self.feat_shape, self.blind, self.hidden = (C, g1, g2), blind, hidden
        self.image = nn.Sequential(nn.Conv2d(C, reduce, 1), nn.ReLU(), nn.Flatten(), nn.Dropout(dropout),
                                   nn.Linear(reduce * g1 * g2, embed))
        self.embed = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        set_forget_bias(self.lstm, 1.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    def start(self, feats: torch.Tensor):
        """The LSTM state ``(h, c)``, each ``[1, N, H]``, after reading the image."""
        if feats.ndim != 4 or tuple(feats.shape[1:]) != self.feat_shape:
            raise ValueError(f"expected features [N, {', '.join(map(str, self.feat_shape))}], "
                             f"got {tuple(feats.shape)}")
        if self.blind:
            z = feats.new_zeros(1, feats.shape[0], self.hidden)
            return z, z.clone()
        _, state = self.lstm(self.image(feats)[:, None])              # x_{-1} = CNN(I): [N, 1, E]
        return state

    def forward(self, feats: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.embed(tokens), self.start(feats))       # [N, T, H]
        return self.out(self.drop(h))                                  # [N, T, V]

    def step(self, tokens: torch.Tensor, state):
        h, state = self.lstm(self.embed(tokens[:, None]), state)     # [B, 1, H]
        return F.log_softmax(self.out(h[:, 0]), dim=-1), state       # [B, V]

    @staticmethod
    def select(state, idx):
        return tuple(s[:, idx] for s in state)


def teacher_forcing_loss(model: nn.Module, feats: torch.Tensor, caps: torch.Tensor, pad: int) -> torch.Tensor:
    """Mean negative log-likelihood per word: the model reads ``caps[:, :-1]`` (the true previous
    words, not its own guesses) and is scored on ``caps[:, 1:]``, padding excluded.
    ``caps``: ids ``[N, L]`` (``<S> … <E> <P> …``)."""
    scores = model(feats, caps[:, :-1])                               # [N, L-1, V]
    return F.cross_entropy(scores.transpose(1, 2), caps[:, 1:], ignore_index=pad)


def teacher_forcing(model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``forward`` for :func:`cvdl.train.fit`: ``batch = (feats [N, ...], caps [N, R, L])`` with
    ``R`` reference captions per image → ``(scores [M, L-1, V], targets [M, L-1])`` with padding
    marked −100 (ignored by ``F.cross_entropy``, so :func:`cvdl.seq.next_token_loss` is the mean
    per word). Training draws one reference per image each time; evaluation scores all ``R``."""
    feats, caps = batch
    if caps.ndim == 2:
        caps = caps[:, None]
    N, R, L = caps.shape
    if model.training:
        caps = caps[torch.arange(N, device=caps.device), torch.randint(0, R, (N,), device=caps.device)]
    else:
        feats, caps = feats.repeat_interleave(R, 0), caps.reshape(N * R, L)
    targets = caps[:, 1:].masked_fill(caps[:, 1:] == PAD_ID, -100)
    return model(feats, caps[:, :-1]), targets


def ranking_batch(model: nn.Module, batch) -> tuple[torch.Tensor, None]:
    """A ``forward`` for :func:`cvdl.train.fit` training a :class:`JointEmbedding`: ``batch =
    (feats [N, ...], caps [N, R, L])`` → the similarities ``[N, N]`` of the images to one of
    their captions each (drawn at random when training, the first when evaluating)."""
    feats, caps = batch
    if caps.ndim == 3:
        pick = (torch.randint(0, caps.shape[1], (len(caps),), device=caps.device) if model.training
                else torch.zeros(len(caps), dtype=torch.long, device=caps.device))
        caps = caps[torch.arange(len(caps), device=caps.device), pick]
    return model.images(feats) @ model.texts(caps).T, None


@torch.no_grad()
def sequence_logprob(model: nn.Module, feats: torch.Tensor, caps: torch.Tensor, pad: int) -> torch.Tensor:
    """``log P(caption | image)`` of each row of ``caps`` ``[N, L]``: the sum over its words and
    ``<E>`` of ``log p(w_t | image, w_<t)``, padding excluded → ``[N]``."""
    logp = F.log_softmax(model(feats, caps[:, :-1]), dim=-1)          # [N, L-1, V]
    target = caps[:, 1:]
    picked = logp.gather(2, target[..., None])[..., 0]                # [N, L-1]
    return (picked * (target != pad)).sum(1)


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


class Caption(NamedTuple):
    """A decoded caption: token ids after ``<S>`` (ending with ``<E>`` when ``finished``) and
    their total log-probability."""

    ids: list[int]
    logprob: float
    finished: bool

    def score(self, alpha: float = 0.0) -> float:
        """The length-normalised score ``logprob / len(ids) ** alpha`` (α = 0: the raw log-probability;
        α = 1: the mean log-probability per token)."""
        return self.logprob / max(len(self.ids), 1) ** alpha


def _check_decode(bos: int, eos: int, max_len: int) -> None:
    _checks.non_negative_int(bos=bos, eos=eos)
    _checks.positive_int(max_len=max_len)


@torch.no_grad()
def greedy(model: nn.Module, feats: torch.Tensor, bos: int, eos: int, max_len: int = 20) -> list[Caption]:
    """Each image's caption by taking the most probable next word at every step, until ``<E>`` or
    ``max_len`` tokens (batched over the images ``feats [N, ...]``)."""
    _check_decode(bos, eos, max_len)
    N = feats.shape[0]
    state = model.start(feats)
    tok = torch.full((N,), bos, dtype=torch.long, device=feats.device)
    ids, total = [[] for _ in range(N)], torch.zeros(N, dtype=torch.float64)
    done = torch.zeros(N, dtype=torch.bool)
    for _ in range(max_len):
        logp, state = model.step(tok, state)                           # [N, V]
        best, tok = logp.max(dim=1)                                    # [N], [N]
        for i in torch.nonzero(~done).flatten().tolist():
            ids[i].append(int(tok[i]))
            total[i] += float(best[i])
        done |= (tok == eos).cpu()
        if bool(done.all()):
            break
    return [Caption(ids[i], float(total[i]), bool(done[i])) for i in range(N)]


@torch.no_grad()
def beam_search(model: nn.Module, feats: torch.Tensor, bos: int, eos: int, beam: int = 5,
                max_len: int = 20, alpha: float = 0.0) -> list[Caption]:
    """The ``beam`` most probable continuations kept at every step, for one image (``feats [1, ...]``).

    At each step every live hypothesis is extended by every word; the ``beam`` best extensions
    by total log-probability are kept; those that end in ``<E>`` leave the beam as finished
    captions. Stops when no hypothesis is alive or after ``max_len`` tokens (the survivors are
    returned unfinished: a beam that never emits ``<E>``). Returns every finished caption and
    survivor, best first by :meth:`Caption.score` with length-normalisation exponent ``alpha``.
    Width 1 is greedy decoding; a width of at least ``V ** (max_len − 1)`` prunes nothing and
    finds the most probable caption (:func:`brute_force`).
    """
    _check_decode(bos, eos, max_len)
    _checks.positive_int(beam=beam)
    _checks.non_negative(alpha=alpha)
    if feats.shape[0] != 1:
        raise ValueError(f"beam_search decodes one image at a time: feats must be [1, ...], got {tuple(feats.shape)}")
    state = model.start(feats)
    seqs, scores = [[]], torch.zeros(1, dtype=torch.float64)           # the live hypotheses
    tok = torch.full((1,), bos, dtype=torch.long, device=feats.device)
    finished: list[Caption] = []
    for _ in range(max_len):
        logp, state = model.step(tok, state)                           # [k, V]
        V = logp.shape[1]
        cand = (scores[:, None] + logp.double().cpu()).flatten()        # [k·V] totals
        top = cand.topk(min(beam, cand.numel()))
        rows, words_ = top.indices // V, top.indices % V
        keep = []
        for s, r, w in zip(top.values.tolist(), rows.tolist(), words_.tolist()):
            if w == eos:
                finished.append(Caption(seqs[r] + [w], s, True))
            else:
                keep.append((s, r, w))
        if not keep:
            break
        seqs = [seqs[r] + [w] for _, r, w in keep]
        scores = torch.tensor([s for s, _, _ in keep], dtype=torch.float64)
        idx = torch.tensor([r for _, r, _ in keep], device=feats.device)
        state = model.select(state, idx)
        tok = torch.tensor([w for _, _, w in keep], device=feats.device)
    else:
        finished += [Caption(s, float(v), False) for s, v in zip(seqs, scores.tolist())]
    return sorted(finished, key=lambda c: -c.score(alpha))


@torch.no_grad()
def brute_force(model: nn.Module, feats: torch.Tensor, bos: int, eos: int, max_len: int,
                vocab_size: int, limit: int = 200_000) -> Caption:
    """The most probable caption of one image over *every* sequence of at most ``max_len``
    tokens (ending at the first ``<E>``, or unfinished at ``max_len``), each scored by teacher
    forcing — independent of the decoders' stepping code. Only for tiny vocabularies: raises
    ``ValueError`` beyond ``limit`` sequences."""
    _check_decode(bos, eos, max_len)
    others = [v for v in range(vocab_size) if v != eos]
    count = sum(len(others) ** k for k in range(max_len + 1))
    if count > limit:
        raise ValueError(f"{count} sequences to score (vocab_size={vocab_size}, max_len={max_len}); limit is {limit}")
    best = None
    for k in range(1, max_len + 1):
        for body in itertools.product(others, repeat=k - 1):
            for ids in ([*body, eos], *([[*body, w] for w in others] if k == max_len else [])):
                caps = torch.tensor([[bos, *ids]], device=feats.device)
                logp = F.log_softmax(model(feats, caps[:, :-1]).double(), -1)[0]     # [k, V]
                lp = float(logp.gather(1, caps[0, 1:, None]).sum())
                if best is None or lp > best.logprob:
                    best = Caption(list(ids), lp, ids[-1] == eos)
    return best


# ----------------------------------------------------------------------------------------------
# BLEU
# ----------------------------------------------------------------------------------------------


class Bleu(NamedTuple):
    """Corpus BLEU-n and its parts: the modified n-gram precisions ``p_1 … p_n``, the brevity
    penalty, and the summed hypothesis and closest-reference lengths."""

    score: float
    precisions: list[float]
    brevity_penalty: float
    hyp_len: int
    ref_len: int


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], n: int = 4) -> Bleu:
    """Corpus BLEU-``n`` (Papineni et al., 2002) with uniform weights ``1/n``:

    ``BLEU = BP · exp(Σ_k (1/n) log p_k)``, where ``p_k`` = (Σ over hypotheses of their k-gram
    counts clipped by the most any one reference has) / (Σ of their k-gram counts), and
    ``BP = 1`` if ``c > r`` else ``exp(1 − r/c)`` with ``c`` the total hypothesis length and
    ``r`` the sum of the reference lengths closest to each hypothesis's length (ties → the
    shorter). Like NLTK's ``corpus_bleu`` without smoothing (which it matches): a hypothesis
    with fewer than ``k`` words counts 1 in ``p_k``'s denominator, and BLEU is 0 when some
    ``p_k`` is 0 — unsmoothed BLEU-4 of a corpus of very short captions is 0.

    ``hypotheses``: one list of words per image; ``references``: for each image, its list of
    reference captions (lists of words).
    """
    _checks.positive_int(n=n)
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} lists of references")
    if not hypotheses:
        raise ValueError("BLEU of an empty corpus is undefined")
    num, den = [0] * n, [0] * n
    c = r = 0
    for i, (hyp, refs) in enumerate(zip(hypotheses, references)):
        if isinstance(hyp, str) or isinstance(refs, str) or (len(refs) and isinstance(refs[0], str)):
            raise TypeError("hypotheses and references must be lists of words, not strings "
                            "(split them: caption.split())")
        if len(refs) == 0:
            raise ValueError(f"hypothesis {i} has no reference")
        for k in range(1, n + 1):
            counts = _ngrams(hyp, k)
            most = Counter()
            for ref in refs:
                most |= _ngrams(ref, k)                               # the max count over references
            num[k - 1] += sum(min(v, most[g]) for g, v in counts.items())
            den[k - 1] += max(1, sum(counts.values()))
        c += len(hyp)
        r += min((len(ref) for ref in refs), key=lambda L: (abs(L - len(hyp)), L))
    precisions = [a / b for a, b in zip(num, den)]
    bp = 1.0 if c > r else (0.0 if c == 0 else math.exp(1 - r / c))
    score = 0.0 if min(num) == 0 else bp * math.exp(sum(math.log(p) for p in precisions) / n)
    return Bleu(score, precisions, bp, c, r)


def bleu_scores(hypotheses, references) -> dict[str, float]:
    """``{"BLEU-1": …, …, "BLEU-4": …}``: :func:`bleu` for n = 1 … 4."""
    return {f"BLEU-{k}": bleu(hypotheses, references, k).score for k in range(1, 5)}


# ----------------------------------------------------------------------------------------------
# Image ↔ sentence retrieval
# ----------------------------------------------------------------------------------------------


class JointEmbedding(nn.Module):
    """Images and sentences in one space where a caption lies close to its image.

    Image side: features ``[N, C, g, g]`` → 1 × 1 convolution → linear → ``D``; sentence side:
    word embeddings → GRU → the last word's state → linear → ``D``; both L2-normalised, so
    ``images @ texts.T`` is the cosine similarity.
    """

    def __init__(self, feat_shape: Sequence[int], vocab_size: int, dim: int = 64, hidden: int = 128,
                 reduce: int = 32, pad: int = 0):
        super().__init__()
        C, g1, g2 = (int(v) for v in feat_shape)
        self.pad = pad
        self.image = nn.Sequential(nn.Conv2d(C, reduce, 1), nn.ReLU(), nn.Flatten(),
                                   nn.Linear(reduce * g1 * g2, dim))
        self.embed = nn.Embedding(vocab_size, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.text = nn.Linear(hidden, dim)

    def images(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(feats), dim=1)                   # [N, D]

    def texts(self, caps: torch.Tensor) -> torch.Tensor:
        """``caps``: ids ``[M, L]`` padded with ``pad`` (``<S>`` and ``<E>`` included)."""
        h, _ = self.gru(self.embed(caps))                              # [M, L, H]
        last = (caps != self.pad).sum(1) - 1                           # [M] index of the last token
        return F.normalize(self.text(h[torch.arange(len(caps)), last]), dim=1)   # [M, D]


def ranking_loss(sim: torch.Tensor, _targets=None, margin: float = 0.2, hardest: bool = False) -> torch.Tensor:
    """The bidirectional hinge (ranking) loss on a batch of matching pairs (Karpathy & Fei-Fei,
    2015; Kiros et al., 2014), ``sim [N, N]`` with the true pairs on the diagonal:

    ``(1/N) Σ_k [ Σ_{l≠k} max(0, m − S_kk + S_kl) + Σ_{l≠k} max(0, m − S_kk + S_lk) ]`` —
    every image must be closer to its sentence than to any other by the margin ``m``, and every
    sentence to its image. ``hardest=True`` keeps only the worst violator of each row and
    column (Faghri et al.'s VSE++). (``_targets`` is ignored: it lets ``fit`` call
    ``ranking_loss(outputs, targets)`` with :func:`ranking_batch`.)"""
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"sim must be square [N, N] with the true pairs on the diagonal, got {tuple(sim.shape)}")
    _checks.non_negative(margin=margin)
    pos = sim.diagonal()
    off = ~torch.eye(len(sim), dtype=torch.bool, device=sim.device)
    cost_s = (margin - pos[:, None] + sim).clamp(min=0) * off         # image k vs sentence l: [N, N]
    cost_i = (margin - pos[None, :] + sim).clamp(min=0) * off         # sentence l vs image k: [N, N]
    if hardest:
        return (cost_s.max(1).values.sum() + cost_i.max(0).values.sum()) / len(sim)
    return (cost_s.sum() + cost_i.sum()) / len(sim)


def recall_at_k(sim: torch.Tensor, positive: torch.Tensor, k: int) -> float:
    """The fraction of queries (rows of ``sim [Q, M]``) with at least one true match among
    their ``k`` most similar items; ``positive``: bool ``[Q, M]`` marking the true matches, or
    a long ``[Q]`` giving each query's one match. Chance is about ``k × matches / M``."""
    _checks.positive_int(k=k)
    if sim.ndim != 2:
        raise ValueError(f"sim must be [Q, M], got {tuple(sim.shape)}")
    if positive.dtype != torch.bool:
        positive = F.one_hot(positive.long(), sim.shape[1]).bool()
    if positive.shape != sim.shape:
        raise ValueError(f"positive must be [Q, M] = {tuple(sim.shape)}, got {tuple(positive.shape)}")
    top = sim.topk(min(k, sim.shape[1]), dim=1).indices                # [Q, k]
    return float(positive.gather(1, top).any(1).double().mean())
