"""cvdl.metric: the losses against PyTorch's, the miners against their definitions, recall@K and
k-NN against brute force and scikit-learn, LSH's collision rate against 1 − θ/π."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cvdl import metric

torch.set_num_threads(1)


def emb(n, d=8, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_cosine_matrix_against_pairwise_cosine():
    a, b = emb(5), emb(7, seed=1)
    want = F.cosine_similarity(a[:, None, :], b[None, :, :], dim=2)
    torch.testing.assert_close(metric.cosine_matrix(a, b), want)
    torch.testing.assert_close(metric.cosine_matrix(a).diagonal(), torch.ones(5))
    z = torch.zeros(1, 8)
    assert metric.cosine_matrix(z, a).abs().max() == 0, "a zero vector is similar to nothing"
    with pytest.raises(ValueError, match="dimension"):
        metric.cosine_matrix(a, emb(3, d=4))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        metric.cosine_matrix(torch.zeros(8))


def test_pair_loss_by_hand():
    sim = torch.tensor([[0.9, -0.2], [0.4, 0.1]])
    same = torch.tensor([[1, 0], [0, 1]])
    assert float(metric.pair_loss(sim, same)) == pytest.approx((0.1 + 0 + 0.4 + 0.9) / 4)
    assert float(metric.pair_loss(sim, same, margin=0.5)) == pytest.approx((0.1 + 0 + 0 + 0.9) / 4)
    with pytest.raises(ValueError, match="shape"):
        metric.pair_loss(sim, torch.ones(3))


def test_triplet_loss_matches_pytorch():
    a, p, n = emb(20), emb(20, seed=1), emb(20, seed=2)
    for margin in (0.05, 0.2, 1.0):             # PyTorch wants margin > 0
        torch.testing.assert_close(metric.triplet_loss(a, p, n, margin, "euclidean"),
                                   nn.TripletMarginLoss(margin=margin)(a, p, n))
        ref = nn.TripletMarginWithDistanceLoss(distance_function=lambda x, y: 1 - F.cosine_similarity(x, y),
                                               margin=margin)
        torch.testing.assert_close(metric.triplet_loss(a, p, n, margin, "cosine"), ref(a, p, n))
    # identical anchor and positive: eps keeps the euclidean distance (and its gradient) finite, as in PyTorch
    a.requires_grad_(True)
    metric.triplet_loss(a, a.detach().clone(), n, 0.2, "euclidean").backward()
    assert torch.isfinite(a.grad).all()
    with pytest.raises(ValueError, match="distance"):
        metric.triplet_loss(a, p, n, distance="manhattan")
    with pytest.raises(ValueError, match="one shape"):
        metric.triplet_loss(a, p[:3], n)


def test_positive_pairs_and_no_positive():
    a, p = metric.positive_pairs(torch.tensor([3, 1, 3, 3, 2]))
    assert sorted(zip(a.tolist(), p.tolist())) == [(0, 2), (0, 3), (2, 0), (2, 3), (3, 0), (3, 2)]
    with pytest.raises(ValueError, match="no positive pair"):
        metric.positive_pairs(torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mined_negatives_satisfy_their_definitions(seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (24,), generator=g)
    labels[:2] = torch.tensor([0, 0])                                  # at least one positive pair
    sim = metric.cosine_matrix(emb(24, seed=seed))
    a, p = metric.positive_pairs(labels)
    for strategy in metric.MINING:
        n = metric.mine_negatives(sim, labels, a, p, strategy, torch.Generator().manual_seed(0))
        assert (labels[n] != labels[a]).all(), f"{strategy}: a negative has another label"
        for i in range(len(a)):
            neg = labels != labels[a[i]]
            s_an, s_ap, s_n = sim[a[i]][neg], sim[a[i], p[i]], sim[a[i], n[i]]
            if strategy == "hardest":
                assert s_n == s_an.max()
            elif strategy == "semihard":
                below = s_an[s_an < s_ap]
                if len(below):
                    assert s_n < s_ap and s_n == below.max(), "the most similar negative below the positive"
                else:
                    assert s_n == s_an.min(), "no negative below the positive: the easiest"
    # random mining draws different negatives and covers the negatives
    drawn = {int(metric.mine_negatives(sim, labels, a[:1], p[:1], "random", torch.Generator().manual_seed(s))[0])
             for s in range(200)}
    assert drawn == set((labels != labels[a[0]]).nonzero().flatten().tolist())


def test_mining_errors():
    sim = torch.eye(3)
    with pytest.raises(ValueError, match="no negative"):
        metric.mine_negatives(sim, torch.tensor([1, 1, 1]), torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="strategy"):
        metric.mine_negatives(sim, torch.tensor([1, 1, 2]), torch.tensor([0]), torch.tensor([1]), "easy")
    with pytest.raises(ValueError, match="mining"):
        metric.TripletLoss(mining="easy")


def test_triplet_loss_module_on_albums():
    torch.manual_seed(0)
    e = F.normalize(torch.randn(6, 2, 8), dim=2).requires_grad_(True)   # 6 identities × 2 views
    ids = torch.arange(6)
    loss = metric.TripletLoss(margin=0.2, mining="hardest")(e, ids)
    flat, y = e.reshape(12, 8), ids.repeat_interleave(2)
    a, p = metric.positive_pairs(y)
    sim = metric.cosine_matrix(flat)
    n = metric.mine_negatives(sim, y, a, p, "hardest")
    torch.testing.assert_close(loss, metric.triplet_loss(flat[a], flat[p], flat[n], 0.2, "cosine"))
    loss.backward()
    assert e.grad.abs().sum() > 0
    assert "hardest" in repr(metric.TripletLoss(mining="hardest"))


def test_knn_matches_scikit_learn():
    from sklearn.neighbors import NearestNeighbors
    db, q = emb(50, seed=3), emb(7, seed=4)
    idx, sims = metric.knn(q, db, 5)
    nn_ = NearestNeighbors(n_neighbors=5, metric="cosine").fit(db.numpy())
    dist, want = nn_.kneighbors(q.numpy())
    np.testing.assert_array_equal(idx.numpy(), want)
    np.testing.assert_allclose(1 - sims.numpy(), dist, atol=1e-6)
    assert metric.knn(q, db, 50)[0].shape == (7, 50)
    with pytest.raises(ValueError, match="database size"):
        metric.knn(q, db, 51)


def test_recall_at_k_against_brute_force():
    g = torch.Generator().manual_seed(5)
    db, q = emb(40, seed=5), emb(15, seed=6)
    yd, yq = torch.randint(0, 6, (40,), generator=g), torch.randint(0, 6, (15,), generator=g)
    got = metric.recall_at_k(q, yq, db, yd, ks=(1, 3, 10))
    sims = metric.cosine_matrix(q, db).numpy()
    for k in (1, 3, 10):
        top = np.argsort(-sims, axis=1)[:, :k]
        want = np.mean([(yd.numpy()[top[i]] == yq.numpy()[i]).any() for i in range(15)])
        assert got[k] == pytest.approx(want)
    # the same set as queries and database: an item may not find itself
    same = metric.recall_at_k(db, yd, db, yd, ks=(1,), exclude_self=True)[1]
    s = metric.cosine_matrix(db).numpy()
    np.fill_diagonal(s, -np.inf)
    assert same == pytest.approx(np.mean(yd.numpy()[s.argmax(1)] == yd.numpy()))
    assert metric.recall_at_k(db, yd, db, yd, ks=(1,))[1] == 1.0, "without exclude_self each item finds itself"
    with pytest.raises(ValueError, match="larger than the database"):
        metric.recall_at_k(q, yq, db, yd, ks=(41,))
    with pytest.raises(ValueError, match="larger than the database"):
        metric.recall_at_k(db, yd, db, yd, ks=(40,), exclude_self=True)
    with pytest.raises(ValueError, match="labels"):
        metric.recall_at_k(q, yq[:3], db, yd)


def test_lsh_collision_rate_is_one_minus_angle_over_pi():
    # pairs of unit vectors at known angles; one bit of a random hyperplane agrees with probability 1 − θ/π
    lsh = metric.HyperplaneLSH(dim=16, bits=50, tables=40, seed=0)    # 2 000 hyperplanes
    g = torch.Generator().manual_seed(1)
    for theta in (0.1, 0.5, 1.0, 2.0, 3.0):
        u = F.normalize(torch.randn(1, 16, generator=g), dim=1)
        w = torch.randn(1, 16, generator=g)
        w = F.normalize(w - (w @ u.T) * u, dim=1)                      # orthogonal to u
        v = math.cos(theta) * u + math.sin(theta) * w
        agree = (lsh.bits_of(u) == lsh.bits_of(v)).double().mean()
        p = 1 - theta / math.pi
        assert abs(float(agree) - p) < 4 * math.sqrt(p * (1 - p) / 2000) + 1e-9


def test_lsh_search_by_brute_force():
    db, q = emb(300, d=12, seed=7), emb(20, d=12, seed=8)
    lsh = metric.HyperplaneLSH(dim=12, bits=4, tables=3, seed=2).index(db)
    idx, scanned = lsh.search(q, 5)
    codes_db, codes_q = lsh.codes(db), lsh.codes(q)
    for i in range(20):
        cand = ((codes_db == codes_q[i]).any(1)).nonzero().flatten()
        assert int(scanned[i]) == len(cand)
        assert torch.equal(torch.sort(lsh.candidates(q[i])).values, cand)
        sims = metric.cosine_matrix(q[i:i + 1], db[cand])[0]
        want = cand[sims.argsort(descending=True)[:5]]
        got = idx[i][idx[i] >= 0]
        assert torch.equal(got, want)
    # one bit per table, one table: every item is a candidate of half the space
    full = metric.HyperplaneLSH(dim=12, bits=1, tables=1).index(db)
    assert 0 < len(full.candidates(q[0])) < 300
    with pytest.raises(ValueError, match="index"):
        metric.HyperplaneLSH(dim=12).candidates(q[0])
    with pytest.raises(ValueError, match="dimension"):
        lsh.codes(emb(2, d=5))


def test_views_albums_and_embedding_net():
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0
    a = metric.albums(x, views=3)
    assert a.shape == (4, 3, 1, 28, 28) and torch.equal(a[:, 2], x)
    v = metric.Views(seed=0)
    r1, r2 = v(a), metric.Views(seed=0)(a)
    assert torch.equal(r1, r2), "the same seed renders the same photos"
    assert not torch.equal(r1[:, 0], r1[:, 1]), "each view is rendered afresh"
    assert metric.Views(degrees=0, scale=(1, 1), shift=0)(x).sub(x).abs().max() < 1e-5, "no change: the identity"
    net = metric.EmbeddingNet(dim=16)
    e = net(r1)
    assert e.shape == (4, 3, 16)
    torch.testing.assert_close(e.norm(dim=2), torch.ones(4, 3))
    torch.testing.assert_close(net(r1[:, 1]), e[:, 1])
    torch.testing.assert_close(metric.embed(net, r1[:, 1], batch_size=3), e[:, 1].detach())
    with pytest.raises(ValueError):
        metric.Views(scale=(1.2, 1.0))
