"""Metric learning and retrieval (notebook 12): embeddings compared by cosine similarity, the pair
and triplet losses, negatives mined inside a batch, recall@K, exact k-NN and locality-sensitive
hashing with random hyperplanes.

Conventions: an embedding is a row of ``[N, D]``; the similarity of two embeddings is their
cosine ``M(x₁, x₂) = cos(f(x₁), f(x₂))`` (the slides' choice), a distance is ``1 − M``. Labels
are identities: two items with the same label are a *positive* pair, with different labels a
*negative* pair.

The course's identity set (:func:`albums`): every MNIST image is a "person" and its "photos" are
random re-renderings of it (rotation, scale, shift: :class:`Views`). Training identities come from
MNIST's training split, test identities from its test split — people never seen in training, as
in face verification. Two different images of the same digit are different people: the hard
negatives.

Every from-scratch piece is checked in ``tests/test_metric.py`` against a reference
(``nn.TripletMarginLoss``, ``nn.TripletMarginWithDistanceLoss``, scikit-learn's
``NearestNeighbors`` and ``roc_auc_score``) or by brute force.

Sources: S. Chopra, R. Hadsell, Y. LeCun, *Learning a similarity metric discriminatively, with
application to face verification*, CVPR 2005 (the pair loss); F. Schroff, D. Kalenichenko,
J. Philbin, *FaceNet*, CVPR 2015 (triplets, semi-hard negatives); A. Hermans, L. Beyer, B. Leibe,
*In defense of the triplet loss for person re-identification*, 2017 (P × K batches, batch-hard);
M. Charikar, *Similarity estimation techniques from rounding algorithms*, STOC 2002 (random
hyperplanes: P[same bit] = 1 − θ/π).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks
from .augment import affine

__all__ = ["cosine_matrix", "pair_loss", "triplet_loss", "positive_pairs", "mine_negatives", "PairLoss", "TripletLoss",
           "recall_at_k", "knn", "HyperplaneLSH", "Views", "albums", "EmbeddingNet", "embed"]

MINING = ("random", "semihard", "hardest")


# ----------------------------------------------------------------------------------------------
# Similarities and losses
# ----------------------------------------------------------------------------------------------


def _rows(x, name: str) -> torch.Tensor:
    t = _checks.tensor(x, name)
    if t.ndim != 2:
        raise ValueError(f"{name} must be [N, D] embeddings, got shape {tuple(t.shape)}")
    return t


def cosine_matrix(a, b=None) -> torch.Tensor:
    """``M[i, j] = cos(a_i, b_j)`` for embeddings ``a`` ``[N, D]`` and ``b`` ``[M, D]`` (default
    ``b = a``) → ``[N, M]``. A zero vector has similarity 0 with everything."""
    a = _rows(a, "a")
    b = a if b is None else _rows(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def pair_loss(sim, same, margin: float = 0.0) -> torch.Tensor:
    """The pair (contrastive) loss on similarities: mean over pairs of
    ``T · (1 − M) + (1 − T) · max(0, M − margin)`` with ``T = same`` (1 for a positive pair).
    Positive pairs are pulled to ``M = 1``; negative pairs pushed down until ``M ≤ margin``
    (margin 0: until orthogonal). The slides' form ``T·M + (1 − T)·(1 − M)`` has the two terms
    swapped: minimising it would push the same person apart."""
    m = _checks.tensor(sim, "sim")
    t = torch.as_tensor(same, device=m.device)
    if t.shape != m.shape:
        raise ValueError(f"same must have the shape of sim {tuple(m.shape)}, got {tuple(t.shape)}")
    t = t.to(m.dtype)
    return (t * (1 - m) + (1 - t) * F.relu(m - margin)).mean()


def triplet_loss(anchor, positive, negative, margin: float = 0.2, distance: str = "cosine") -> torch.Tensor:
    """The triplet hinge loss, mean over triplets ``[N, D]`` each.

    ``distance="cosine"``: the slides' ``max(0, δ − M(q, good) + M(q, bad))`` with ``M`` the cosine —
    ``nn.TripletMarginWithDistanceLoss`` with the distance ``1 − cos``. ``distance="euclidean"``:
    ``max(0, ‖a − p‖ − ‖a − n‖ + δ)`` with plain (not squared) distances and PyTorch's ``eps = 1e-6``
    added to each difference, exactly ``nn.TripletMarginLoss(margin=δ)``. FaceNet uses squared
    distances of unit vectors, ``‖a − p‖² = 2 − 2·cos``: the cosine loss with twice the margin, halved."""
    a, p, n = (_rows(v, name) for v, name in ((anchor, "anchor"), (positive, "positive"), (negative, "negative")))
    if not a.shape == p.shape == n.shape:
        raise ValueError(f"anchor, positive and negative must have one shape, got {tuple(a.shape)}, "
                         f"{tuple(p.shape)}, {tuple(n.shape)}")
    if distance == "cosine":
        return F.relu(margin - F.cosine_similarity(a, p) + F.cosine_similarity(a, n)).mean()
    if distance == "euclidean":
        return F.relu((a - p + 1e-6).norm(dim=1) - (a - n + 1e-6).norm(dim=1) + margin).mean()
    raise ValueError(f"distance must be 'cosine' or 'euclidean', got {distance!r}")


# ----------------------------------------------------------------------------------------------
# Mining inside a batch
# ----------------------------------------------------------------------------------------------


def positive_pairs(labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ordered (anchor, positive) pair of a batch: indices ``i ≠ j`` with
    ``labels[i] == labels[j]`` → ``(anchors [P], positives [P])``. ``ValueError`` when the batch
    holds no positive pair (every label once): no triplet can be formed."""
    y = torch.as_tensor(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be [N], got shape {tuple(y.shape)}")
    same = (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool, device=y.device)
    a, p = same.nonzero(as_tuple=True)
    if len(a) == 0:
        raise ValueError("the batch has no positive pair (each label occurs once): sample several "
                         "items per identity (P × K batches)")
    return a, p


def mine_negatives(sim, labels, anchors, positives, strategy: str = "semihard",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """One negative per (anchor, positive) pair, chosen in the batch from the similarity matrix
    ``sim`` ``[N, N]`` → indices ``[P]``:

    - ``"random"``: any item with another label, uniformly;
    - ``"hardest"``: the most similar item with another label;
    - ``"semihard"`` (FaceNet; TensorFlow's ``triplet_semihard_loss``): the most similar negative
      that is still *less* similar to the anchor than the positive, ``M(a, n) < M(a, p)`` — hard,
      but not yet ranked above the positive; where there is none (every negative beats the
      positive, as at the start of training) the *least* similar negative, the easiest one.

    An anchor with no negative in the batch (one label only) raises ``ValueError``."""
    s = _checks.tensor(sim, "sim").detach()
    y = torch.as_tensor(labels, device=s.device)
    a, p = torch.as_tensor(anchors, device=s.device), torch.as_tensor(positives, device=s.device)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] != len(y):
        raise ValueError(f"sim must be [N, N] for N = {len(y)} labels, got {tuple(s.shape)}")
    if strategy not in MINING:
        raise ValueError(f"strategy must be one of {MINING}, got {strategy!r}")
    negative = y[a][:, None] != y[None, :]                            # [P, N]
    if not negative.any(1).all():
        raise ValueError("an anchor has no negative in the batch: the batch needs two identities or more")
    s_an = s[a].masked_fill(~negative, -math.inf)                     # [P, N]
    if strategy == "hardest":
        return s_an.argmax(1)
    if strategy == "random":
        r = torch.rand(s_an.shape, generator=generator).to(s.device).masked_fill(~negative, -1.0)
        return r.argmax(1)
    s_ap = s[a, p][:, None]
    easier = s_an.masked_fill(s_an >= s_ap, -math.inf)                # negatives below the positive
    has = torch.isfinite(easier).any(1)
    easiest = s[a].masked_fill(~negative, math.inf).argmin(1)
    return torch.where(has, easier.argmax(1), easiest)


def _flatten_album(embeddings: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.as_tensor(ids, device=embeddings.device)
    if embeddings.ndim == 3:
        return embeddings.reshape(-1, embeddings.shape[-1]), y[:, None].expand(*embeddings.shape[:2]).reshape(-1)
    return embeddings, y


class PairLoss(nn.Module):
    """:func:`pair_loss` over every pair of a P × K batch, the positive and the negative pairs
    weighted equally (a batch holds far more negative pairs): ``mean over positive pairs of
    (1 − M) + mean over negative pairs of max(0, M − margin)``. ``forward(embeddings, ids)`` as
    :class:`TripletLoss`."""

    def __init__(self, margin: float = 0.0):
        super().__init__()
        self.margin = float(margin)

    def forward(self, embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        e, y = _flatten_album(embeddings, ids)
        a, p = positive_pairs(y)
        sim = cosine_matrix(e)
        negative = y[:, None] != y[None, :]
        if not negative.any():
            raise ValueError("the batch has one identity only: no negative pair")
        return (1 - sim[a, p]).mean() + F.relu(sim[negative] - self.margin).mean()

    def __repr__(self) -> str:
        return f"PairLoss(margin={self.margin:g})"


class TripletLoss(nn.Module):
    """The cosine triplet loss over a P × K batch with negatives mined in it: the loss function
    for ``train.fit`` on :func:`albums`. ``forward(embeddings, ids)``: embeddings ``[B, K, D]``
    (K views of each of B identities, from :class:`EmbeddingNet`) or ``[N, D]`` with ``ids``
    ``[B]`` or ``[N]``. Every (anchor, positive) pair of the batch is used, each with one mined
    negative. ``seed`` fixes the random miner's generator."""

    def __init__(self, margin: float = 0.2, mining: str = "semihard", seed: int = 0):
        super().__init__()
        if mining not in MINING:
            raise ValueError(f"mining must be one of {MINING}, got {mining!r}")
        self.margin, self.mining, self.seed = float(margin), mining, seed
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, embeddings: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        e, y = _flatten_album(embeddings, ids)
        a, p = positive_pairs(y)
        sim = cosine_matrix(e)
        n = mine_negatives(sim, y, a, p, self.mining, self.generator)
        return F.relu(self.margin - sim[a, p] + sim[a, n]).mean()

    def __repr__(self) -> str:        # the loss's name in checkpoint keys
        return f"TripletLoss(margin={self.margin:g}, mining={self.mining!r}, seed={self.seed})"


# ----------------------------------------------------------------------------------------------
# Search and its scores
# ----------------------------------------------------------------------------------------------


def knn(queries, database, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours by cosine similarity: ``(indices [Q, k], similarities [Q, k])``,
    most similar first. For unit vectors ``‖u − v‖² = 2 − 2·cos(u, v)``, so this is
    :func:`cvdl.viz.nearest_neighbours` (notebook 04's Euclidean search) on the normalised
    vectors. ``ValueError`` when ``k`` exceeds the database."""
    from .viz import nearest_neighbours
    q, d = _rows(queries, "queries"), _rows(database, "database")
    dist, idx = nearest_neighbours(F.normalize(q.double(), dim=1), F.normalize(d.double(), dim=1), k)
    return idx, (1 - dist.double() ** 2 / 2).to(q.dtype)


def recall_at_k(queries, query_labels, database, database_labels, ks=(1, 5, 10),
                exclude_self: bool = False) -> dict[int, float]:
    """Recall@K as metric learning defines it: the fraction of queries with **at least one**
    item of their own label among their K most similar database items (cosine) — not the
    information-retrieval recall, the share of all relevant items found. ``exclude_self``: the
    queries are the database and an item may not retrieve itself. → ``{K: recall}``; counted by
    :func:`cvdl.caption.recall_at_k` (notebook 08's image–sentence retrieval). ``ValueError`` when
    a K exceeds the items there are to rank."""
    from .caption import recall_at_k as recall_of
    q, d = _rows(queries, "queries"), _rows(database, "database")
    yq, yd = torch.as_tensor(query_labels).to(q.device), torch.as_tensor(database_labels).to(q.device)
    if len(yq) != len(q) or len(yd) != len(d):
        raise ValueError(f"labels must match the embeddings: {len(yq)} for {len(q)} queries, "
                         f"{len(yd)} for {len(d)} database items")
    if exclude_self and len(q) != len(d):
        raise ValueError(f"exclude_self needs the queries to be the database, got {len(q)} and {len(d)}")
    ks = [int(k) for k in ks]
    _checks.positive_int(**{f"K{k}": k for k in ks})
    room = len(d) - (1 if exclude_self else 0)
    if max(ks) > room:
        raise ValueError(f"K = {max(ks)} is larger than the database ({room} items to rank)")
    sims = cosine_matrix(q, d)
    positive = yq[:, None] == yd[None, :]
    if exclude_self:
        sims.fill_diagonal_(-math.inf)
        positive.fill_diagonal_(False)
    return {k: recall_of(sims, positive, k) if len(q) else float("nan") for k in ks}


class HyperplaneLSH:
    """Locality-sensitive hashing for cosine similarity with random hyperplanes (Charikar 2002).

    Each of ``tables`` hash tables draws ``bits`` random Gaussian directions; an embedding's code
    in a table is the sign pattern of its projections (``bits`` bits). Two vectors at angle θ agree
    on one bit with probability ``1 − θ/π``, so similar vectors tend to share a bucket. A query's
    **candidates** are the database items in its bucket in any table; only those are scored
    exactly. More bits: smaller buckets, fewer items scanned, lower recall; more tables: higher
    recall, more scanned."""

    def __init__(self, dim: int, bits: int = 8, tables: int = 4, seed: int = 0):
        _checks.positive_int(dim=dim, bits=bits, tables=tables)
        if bits > 62:
            raise ValueError(f"bits must be at most 62 (codes are int64), got {bits}")
        self.dim, self.bits, self.tables = dim, bits, tables
        g = torch.Generator().manual_seed(seed)
        self.planes = torch.randn(tables, bits, dim, generator=g)     # [T, B, D]
        self.database: torch.Tensor | None = None
        self.buckets: list[dict[int, torch.Tensor]] = []

    def bits_of(self, x) -> torch.Tensor:
        """The sign bits ``[N, T, B]`` (bool: projection > 0), computed in float32."""
        x = _rows(x, "x").float()
        if x.shape[1] != self.dim:
            raise ValueError(f"x must have dimension {self.dim}, got {x.shape[1]}")
        return torch.einsum("nd,tbd->ntb", x, self.planes) > 0

    def codes(self, x) -> torch.Tensor:
        """Each row's bucket in each table: int64 ``[N, T]`` (the bits read as a binary number)."""
        weights = 2 ** torch.arange(self.bits, dtype=torch.int64)
        return (self.bits_of(x).long() * weights).sum(-1)

    def index(self, database) -> "HyperplaneLSH":
        """Hash the database ``[M, D]`` into every table; returns ``self``."""
        self.database = _rows(database, "database").float()
        codes = self.codes(self.database)
        self.buckets = []
        for t in range(self.tables):
            order = torch.argsort(codes[:, t], stable=True)
            keys, counts = torch.unique_consecutive(codes[order, t], return_counts=True)
            self.buckets.append(dict(zip(keys.tolist(), torch.split(order, counts.tolist()))))
        return self

    def candidates(self, query) -> torch.Tensor:
        """The database indices sharing a bucket with one query ``[D]`` in at least one table."""
        if self.database is None:
            raise ValueError("index a database first: lsh.index(database)")
        code = self.codes(torch.as_tensor(query).reshape(1, -1))[0]
        found = [self.buckets[t].get(int(code[t])) for t in range(self.tables)]
        found = [f for f in found if f is not None]
        return torch.unique(torch.cat(found)) if found else torch.zeros(0, dtype=torch.int64)

    def search(self, queries, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Approximate k-NN: for each query the k most similar of its candidates by exact cosine →
        ``(indices [Q, k], scanned [Q])``; fewer than k candidates leave ``-1`` in the row.
        ``scanned`` counts the candidates scored."""
        q = _rows(queries, "queries").float()
        _checks.positive_int(k=k)
        out = torch.full((len(q), k), -1, dtype=torch.int64)
        scanned = torch.zeros(len(q), dtype=torch.int64)
        for i in range(len(q)):
            c = self.candidates(q[i])
            scanned[i] = len(c)
            if len(c):
                sims = cosine_matrix(q[i:i + 1], self.database[c])[0]
                top = sims.topk(min(k, len(c))).indices
                out[i, :len(top)] = c[top]
        return out, scanned


# ----------------------------------------------------------------------------------------------
# The identity set and an embedding network
# ----------------------------------------------------------------------------------------------


class Views:
    """Random "photos" of each image: rotation within ``±degrees``, scale in ``scale``, a shift of
    up to ``shift`` pixels each way, drawn independently per view. Takes ``[N, C, H, W]`` or an
    album ``[N, K, C, H, W]`` (every view re-rendered) and returns the same shape; as ``train.fit``'s
    ``augment`` it renders fresh views of every identity at every step. ``seed`` fixes its
    generator."""

    def __init__(self, degrees: float = 15.0, scale: tuple[float, float] = (0.9, 1.1), shift: float = 2.5,
                 seed: int = 0):
        _checks.non_negative(degrees=degrees, shift=shift)
        if not (isinstance(scale, (tuple, list)) and len(scale) == 2 and 0 < scale[0] <= scale[1]):
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
        self.degrees, self.scale, self.shift, self.seed = float(degrees), tuple(scale), float(shift), seed
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if x.ndim == 5:
            x = x.reshape(-1, *shape[2:])
        _checks.images(x)
        n, g = len(x), self.generator
        if n == 0:
            return x.reshape(shape)
        angle = (2 * torch.rand(n, generator=g) - 1) * self.degrees
        trans = (2 * torch.rand(n, 2, generator=g) - 1) * self.shift
        lo, hi = self.scale
        scale = lo + (hi - lo) * torch.rand(n, generator=g)
        return affine(x, angle.to(x.device), trans.to(x.device), scale.to(x.device)).reshape(shape)

    def __repr__(self) -> str:
        return (f"Views(degrees={self.degrees:g}, scale=({self.scale[0]:g}, {self.scale[1]:g}), "
                f"shift={self.shift:g}, seed={self.seed})")


def albums(images, views: int = 2, render: Views | None = None) -> torch.Tensor:
    """An album of ``views`` photos of each image: ``[N, C, H, W]`` → ``[N, views, C, H, W]``.
    With ``render`` (a :class:`Views`) the photos are rendered now (fixed test photos); without,
    they are copies, to be re-rendered at every training step by ``train.fit(augment=Views())``."""
    _checks.positive_int(views=views)
    x = _checks.images(images)
    album = x[:, None].expand(x.shape[0], views, *x.shape[1:]).contiguous()
    return render(album) if render is not None else album


class EmbeddingNet(nn.Module):
    """A small CNN that maps ``[N, 1, 28, 28]`` images (or albums ``[B, K, 1, 28, 28]``) to unit
    vectors ``[N, dim]`` (or ``[B, K, dim]``): three 3 × 3 conv–ReLU blocks (the first two
    max-pooled), average-pooled to 2 × 2, a linear layer, L2 normalisation."""

    def __init__(self, dim: int = 64, widths=(16, 32, 32)):
        _checks.positive_int(dim=dim)
        if len(widths) != 3:
            raise ValueError(f"widths must name three layers, got {widths}")
        super().__init__()
        a, b, c = widths
        self.features = nn.Sequential(nn.Conv2d(1, a, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(b, c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                      nn.Flatten())
        self.head = nn.Linear(4 * c, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if x.ndim == 5:
            x = x.reshape(-1, *shape[2:])
        e = F.normalize(self.head(self.features(x)), dim=1)
        return e.reshape(*shape[:2], -1) if len(shape) == 5 else e


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``model``'s output for ``x`` in batches, in eval mode, on the model's device → CPU ``[N, D]``."""
    model.eval()
    dev = _checks.model_device(model)
    if len(x) == 0:
        return torch.zeros(0, 0)
    return torch.cat([model(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])
