"""cvdl.caption: the scene set, Show and Tell, decoding, BLEU (against NLTK) and retrieval."""
import itertools
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cvdl import caption, seq

torch.set_num_threads(1)


def tiny(seed=0, V=5, C=3, scale=3.0, blind=False):
    torch.manual_seed(seed)
    m = caption.ShowAndTell((C, 1, 1), V, embed=4, hidden=8, blind=blind).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)
    return m, torch.randn(1, C, 1, 1, generator=torch.Generator().manual_seed(seed + 1))


# ----------------------------------------------------------------------------------------------
# the scene set
# ----------------------------------------------------------------------------------------------


def test_scenes_are_deterministic_and_prefixes_agree():
    a, b = caption.scenes("val", n=20), caption.scenes("val", n=50)
    assert torch.equal(a.images, b.images[:20]) and a.captions == b.captions[:20]
    assert a.images.shape == (20, 3, 64, 64) and a.images.dtype == torch.uint8
    assert all(len(c) == 4 for c in a.captions)
    assert not torch.equal(a.images, caption.scenes("test", n=20).images)


def test_scene_captions_describe_what_was_drawn():
    s = caption.scenes("test", n=100)
    img = s.images.permute(0, 2, 3, 1).numpy()
    for i, f in enumerate(s.facts):
        (ax, ay), (bx, by) = f["a_xy"], f["b_xy"]
        rel = f["relation"]
        assert {"left": ax < bx - 15, "right": ax > bx + 15, "above": ay < by - 15, "below": ay > by + 15}[rel]
        across = abs(ay - by) if rel in ("left", "right") else abs(ax - bx)
        assert across <= 8
        for obj, (x, y) in ((f["a"], (ax, ay)), (f["b"], (bx, by))):
            assert tuple(img[i, int(y), int(x)]) == caption.COLOURS[obj["colour"]]   # the centre is painted
        assert caption.describe_scene(f["a"], f["b"], rel) == s.captions[i]
        assert f"{f['a']['colour']} {f['a']['shape']}" in s.captions[i][2]


def test_describe_scene_paraphrases():
    a = {"shape": "circle", "colour": "red", "size": "small"}
    b = {"shape": "square", "colour": "blue", "size": "large"}
    assert caption.describe_scene(a, b, "left") == [
        "a small red circle to the left of a large blue square", "a large blue square to the right of a small red circle",
        "a red circle left of a blue square", "there is a large blue square and a small red circle to its left"]
    assert caption.describe_scene(a, b, "below")[1] == "a large blue square above a small red circle"
    with pytest.raises(ValueError, match="relation"):
        caption.describe_scene(a, b, "behind")


def test_scenes_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        caption.scenes("dev")
    with pytest.raises(ValueError, match="500 images"):
        caption.scenes("test", n=501)


def test_encode_and_words_round_trip():
    v = caption.caption_vocab()
    caps = ["a red circle left of a blue square", "there is a small green triangle and a large yellow circle below it"]
    ids = caption.encode_captions(v, caps, 20)
    assert ids.shape == (2, 20) and ids[0, 0] == v.stoi["<S>"] and ids[0, 9] == v.stoi["<E>"]
    assert (ids[0, 10:] == caption.PAD_ID).all()
    assert [" ".join(caption.words(v, r)) for r in ids] == caps
    assert caption.words(v, ids[0, 1:]) == caps[0].split()
    with pytest.raises(ValueError, match="shorter than the longest"):
        caption.encode_captions(v, caps, 5)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        caption.encode_captions(v, ["a purple circle"])
    every = {w for cs in caption.scenes("train", n=300).captions for c in cs for w in c.split()}
    assert every | {"<S>", "<E>", "<P>"} == set(v.itos)


# ----------------------------------------------------------------------------------------------
# Show and Tell, teacher forcing
# ----------------------------------------------------------------------------------------------


def test_grid_features_pool_the_extractor_output():
    conv = torch.nn.Conv2d(3, 5, 3, stride=2)
    x = torch.rand(7, 3, 32, 32)
    out = caption.grid_features(conv, x, grid=4, batch_size=3)
    assert out.shape == (7, 5, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(out, F.adaptive_avg_pool2d(conv(x), 4))


def test_step_by_step_equals_forward_and_blind_ignores_the_image():
    m, f = tiny(0, V=6, C=3)
    tokens = torch.tensor([[0, 3, 2, 5, 1]])
    with torch.no_grad():
        full = F.log_softmax(m(f, tokens), -1)[0]                      # [T, V]
        state, rows = m.start(f), []
        for t in range(tokens.shape[1]):
            lp, state = m.step(tokens[:, t], state)
            rows.append(lp[0])
    torch.testing.assert_close(torch.stack(rows), full)
    b, _ = tiny(0, V=6, C=3, blind=True)
    with torch.no_grad():
        torch.testing.assert_close(b(f, tokens), b(torch.randn_like(f) * 10, tokens))
        assert not torch.allclose(m(f, tokens), m(torch.randn_like(f) * 10, tokens))
    with pytest.raises(ValueError, match="expected features"):
        m.start(torch.zeros(1, 4, 1, 1))


def test_teacher_forcing_loss_is_the_hand_summed_nll():
    m, _ = tiny(1, V=7, C=3)
    pad = 6
    caps = torch.tensor([[0, 3, 4, 1, pad, pad], [0, 2, 2, 5, 3, 1], [0, 1, pad, pad, pad, pad]])
    feats = torch.randn(3, 3, 1, 1)
    loss = caption.teacher_forcing_loss(m, feats, caps, pad)
    with torch.no_grad():
        logp = F.log_softmax(m(feats, caps[:, :-1]), -1)
    nll = [-float(logp[i, t - 1, caps[i, t]]) for i in range(3) for t in range(1, 6) if caps[i, t] != pad]
    assert loss.item() == pytest.approx(sum(nll) / len(nll), rel=1e-6)
    lp = caption.sequence_logprob(m, feats, caps, pad)
    assert lp.shape == (3,) and float(-lp.sum()) == pytest.approx(sum(nll), rel=1e-6)


def test_teacher_forcing_forward_for_fit():
    torch.manual_seed(0)
    V = len(caption.caption_vocab())
    m = caption.ShowAndTell((3, 2, 2), V, embed=8, hidden=8)
    v = caption.caption_vocab()
    s = caption.scenes("val", n=4)
    caps = caption.encode_captions(v, [c for cs in s.captions for c in cs], 16).view(4, 4, 16)
    feats = torch.randn(4, 3, 2, 2)
    m.eval()
    scores, targets = caption.teacher_forcing(m, (feats, caps))
    assert scores.shape == (16, 15, V) and targets.shape == (16, 15) and (targets == -100).any()
    want = caption.teacher_forcing_loss(m, feats.repeat_interleave(4, 0), caps.view(16, 16), caption.PAD_ID)
    assert seq.next_token_loss(scores, targets).item() == pytest.approx(want.item(), rel=1e-6)
    m.train()
    scores, targets = caption.teacher_forcing(m, (feats, caps))
    assert scores.shape == (4, 15, V)
    for i in range(4):   # each row is one of its image's references
        assert any(torch.equal(targets[i].masked_fill(targets[i] == -100, caption.PAD_ID), caps[i, r, 1:]) for r in range(4))


# ----------------------------------------------------------------------------------------------
# decoding
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_greedy_is_the_argmax_loop_and_beam_one(seed):
    m, f = tiny(seed, V=6)
    bos, eos = 0, 1
    g = caption.greedy(m, f, bos, eos, 8)[0]
    state, tok, ids, total = m.start(f), torch.tensor([bos]), [], 0.0
    with torch.no_grad():
        for _ in range(8):
            lp, state = m.step(tok, state)
            tok = lp.argmax(1)
            ids.append(int(tok))
            total += float(lp[0, tok])
            if int(tok) == eos:
                break
    assert g.ids == ids and g.logprob == pytest.approx(total, abs=1e-5) and g.finished == (ids[-1] == eos)
    b = caption.beam_search(m, f, bos, eos, beam=1, max_len=8)[0]
    assert b.ids == g.ids and b.logprob == pytest.approx(g.logprob, abs=1e-5)


def test_greedy_batched_equals_one_at_a_time():
    torch.manual_seed(3)
    m = caption.ShowAndTell((3, 1, 1), 6, embed=4, hidden=8).eval()
    feats = torch.randn(5, 3, 1, 1) * 3
    batch = caption.greedy(m, feats, 0, 1, 10)
    for i in range(5):
        one = caption.greedy(m, feats[i:i + 1], 0, 1, 10)[0]
        assert one.ids == batch[i].ids and one.logprob == pytest.approx(batch[i].logprob, abs=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_a_wide_beam_is_exact(seed):
    m, f = tiny(seed, V=4)
    exact = caption.brute_force(m, f, 0, 1, max_len=5, vocab_size=4)
    wide = caption.beam_search(m, f, 0, 1, beam=4 ** 4, max_len=5)
    assert wide[0].ids == exact.ids and wide[0].logprob == pytest.approx(exact.logprob, abs=1e-5)
    assert [c.score() for c in wide] == sorted((c.score() for c in wide), reverse=True)
    # every returned caption's log-probability is its teacher-forced log-probability
    for c in wide[:20]:
        ids = torch.tensor([[0, *c.ids]])
        assert caption.sequence_logprob(m, f, ids, pad=99).item() == pytest.approx(c.logprob, abs=1e-4)


def test_brute_force_enumerates_every_sequence():
    # with V = 3 and max_len = 2: sequences E, xE, xy (x, y not E) -> 1 + 2 + 4 = 7 candidates
    m, f = tiny(5, V=3)
    best = caption.brute_force(m, f, 0, 2, max_len=2, vocab_size=3)
    cands = [[2]] + [[x, 2] for x in (0, 1)] + [[x, y] for x in (0, 1) for y in (0, 1)]
    scores = [caption.sequence_logprob(m, f, torch.tensor([[0, *c]]), pad=99).item() for c in cands]
    assert best.ids == cands[int(np.argmax(scores))] and best.logprob == pytest.approx(max(scores), abs=1e-5)
    with pytest.raises(ValueError, match="limit"):
        caption.brute_force(m, f, 0, 2, max_len=30, vocab_size=3)


def test_a_beam_that_never_emits_the_end_token():
    m, f = tiny(2, V=5)
    with torch.no_grad():
        m.out.bias[1] = -1e4                                           # <E> (id 1) is never chosen
    out = caption.beam_search(m, f, 0, 1, beam=3, max_len=6)
    assert len(out) == 3 and all(not c.finished and len(c.ids) == 6 and 1 not in c.ids for c in out)
    g = caption.greedy(m, f, 0, 1, 6)[0]
    assert not g.finished and len(g.ids) == 6
    assert caption.beam_search(m, f, 0, 1, beam=2, max_len=1)[0].ids.__len__() == 1


def test_length_normalisation_reorders_by_mean_logprob():
    m, f = tiny(4, V=5)
    raw = caption.beam_search(m, f, 0, 1, beam=6, max_len=6, alpha=0.0)
    per_word = caption.beam_search(m, f, 0, 1, beam=6, max_len=6, alpha=1.0)
    assert sorted(raw) == sorted(per_word)                              # the same hypotheses, reordered
    assert per_word[0].score(1.0) == max(c.logprob / len(c.ids) for c in raw)
    c = caption.Caption([3, 4, 1], -3.0, True)
    assert c.score(0) == -3.0 and c.score(1) == -1.0 and c.score(0.5) == pytest.approx(-3 / math.sqrt(3))


def test_decoding_bad_arguments():
    m, f = tiny(0)
    with pytest.raises(ValueError, match="one image"):
        caption.beam_search(m, f.repeat(2, 1, 1, 1), 0, 1)
    with pytest.raises(ValueError, match="beam"):
        caption.beam_search(m, f, 0, 1, beam=0)
    with pytest.raises(ValueError, match="alpha"):
        caption.beam_search(m, f, 0, 1, alpha=-1)
    with pytest.raises(ValueError, match="max_len"):
        caption.greedy(m, f, 0, 1, max_len=0)


# ----------------------------------------------------------------------------------------------
# BLEU, against NLTK
# ----------------------------------------------------------------------------------------------

nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")


def _nltk(hyps, refs, n):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # NLTK warns when some precision is 0 (BLEU is then ~0)
        return nltk_bleu.corpus_bleu(refs, hyps, weights=(1 / n,) * n)


def _random_corpus(rng, size, words="a b c d e f".split()):
    hyps, refs = [], []
    for _ in range(size):
        base = [rng.choice(words) for _ in range(rng.randint(1, 12))]
        hyps.append([w if rng.random() < 0.7 else rng.choice(words) for w in base][:rng.randint(0, len(base))] or base[:1])
        refs.append([[w if rng.random() < 0.8 else rng.choice(words) for w in base][:rng.randint(1, len(base))]
                     for _ in range(rng.randint(1, 4))])
    return hyps, refs


@pytest.mark.parametrize("seed", range(20))
def test_bleu_matches_nltk_corpus_bleu(seed):
    rng = random.Random(seed)
    hyps, refs = _random_corpus(rng, rng.randint(1, 15))
    for n in (1, 2, 3, 4):
        ours = caption.bleu(hyps, refs, n).score
        assert ours == pytest.approx(_nltk(hyps, refs, n), abs=1e-12), (n, hyps, refs)


def test_bleu_edge_cases_against_nltk():
    refs = [["a red circle to the left of a blue square".split(), "a blue square right of a red circle".split()]]
    cases = [["a", "red", "circle"],                           # shorter than 4 words: BLEU-4 = 0
             "a red circle to the left of a blue square".split(),   # a perfect match
             "a a a a a a a".split(),                          # clipping
             "a red circle to the left of a blue square and more words after it".split()]   # longer: BP = 1
    for hyp in cases:
        for n in (1, 2, 3, 4):
            assert caption.bleu([hyp], refs, n).score == pytest.approx(_nltk([hyp], refs, n), abs=1e-12)
    short = caption.bleu([["a", "red", "circle"]], refs)
    assert short.score == 0 and short.precisions[:3] == [1.0, 1.0, 1.0] and short.precisions[3] == 0
    assert caption.bleu([cases[1]], refs).score == pytest.approx(1.0)
    assert caption.bleu([cases[2]], refs, 1).precisions[0] == pytest.approx(2 / 7)    # "a" clipped to 2
    # ties in the closest reference length go to the shorter one (as NLTK)
    tie = caption.bleu([["x"] * 5], [[["x"] * 4, ["x"] * 6]], 1)
    assert tie.ref_len == 4 and tie.brevity_penalty == 1.0
    # an empty hypothesis: no precision, BP = 0
    empty = caption.bleu([[]], refs)
    assert empty.score == 0 and empty.brevity_penalty == 0 and _nltk([[]], refs, 4) == 0


def test_bleu_is_corpus_level_not_a_mean_of_sentences():
    refs = [["a b c d e".split()], ["f g h i j".split()]]
    hyps = ["a b c d e".split(), "f g x y".split()]
    corpus = caption.bleu(hyps, refs, 2).score
    mean = np.mean([caption.bleu([h], [r], 2).score for h, r in zip(hyps, refs)])
    assert corpus == pytest.approx(_nltk(hyps, refs, 2)) and corpus != pytest.approx(mean)


def test_bleu_bad_input():
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        caption.bleu([["a"], ["b"]], [[["a"]]])
    with pytest.raises(TypeError, match="lists of words"):
        caption.bleu(["a red circle"], [[["a", "red", "circle"]]])
    with pytest.raises(TypeError, match="lists of words"):
        caption.bleu([["a"]], [["a", "red"]])
    with pytest.raises(ValueError, match="no reference"):
        caption.bleu([["a"]], [[]])
    with pytest.raises(ValueError, match="empty corpus"):
        caption.bleu([], [])
    assert list(caption.bleu_scores([["a", "b"]], [[["a", "b"]]])) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"]


# ----------------------------------------------------------------------------------------------
# retrieval
# ----------------------------------------------------------------------------------------------


def _ranking_loops(S, m, hardest=False):
    N = len(S)
    total = 0.0
    for k in range(N):
        a = [max(0.0, m - S[k, k] + S[k, l]) for l in range(N) if l != k]
        b = [max(0.0, m - S[k, k] + S[l, k]) for l in range(N) if l != k]
        total += (max(a, default=0) + max(b, default=0)) if hardest else (sum(a) + sum(b))
    return total / N


@pytest.mark.parametrize("hardest", [False, True])
def test_ranking_loss_matches_loops(hardest):
    S = torch.rand(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    for m in (0.0, 0.2, 1.0):
        assert caption.ranking_loss(S, margin=m, hardest=hardest).item() == pytest.approx(_ranking_loops(S, m, hardest))
    assert caption.ranking_loss(torch.eye(4), margin=0.5).item() == 0.0     # every pair beats the rest by 1
    assert caption.ranking_loss(torch.ones(1, 1)).item() == 0.0             # one pair: no negatives
    with pytest.raises(ValueError, match="square"):
        caption.ranking_loss(torch.zeros(2, 3))


def test_ranking_loss_gradient_pulls_pairs_together():
    S = torch.zeros(3, 3, requires_grad=True)
    caption.ranking_loss(S, margin=0.2).backward()
    assert (S.grad.diagonal() < 0).all() and (S.grad[~torch.eye(3, dtype=bool)] > 0).all()


def test_recall_at_k_matches_sklearn():
    from sklearn.metrics import top_k_accuracy_score
    g = torch.Generator().manual_seed(1)
    S = torch.rand(40, 40, generator=g)
    truth = torch.randperm(40, generator=g)
    for k in (1, 3, 10, 39):
        want = top_k_accuracy_score(truth.numpy(), S.numpy(), k=k, labels=np.arange(40))
        assert caption.recall_at_k(S, truth, k) == pytest.approx(want)
    # several true matches per query (a bool mask), and k larger than the gallery
    pos = torch.zeros(3, 5, dtype=torch.bool)
    pos[0, [1, 2]] = True
    pos[1, 4] = True
    pos[2, 0] = True
    S = torch.tensor([[0.9, 0.1, 0.8, 0.0, 0.0], [0.9, 0.8, 0.7, 0.6, 0.5], [0.5, 0.9, 0.0, 0.0, 0.0]])
    assert caption.recall_at_k(S, pos, 1) == 0.0
    assert caption.recall_at_k(S, pos, 2) == pytest.approx(2 / 3)
    assert caption.recall_at_k(S, pos, 99) == 1.0
    with pytest.raises(ValueError, match="positive must be"):
        caption.recall_at_k(S, torch.zeros(3, 4, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="k"):
        caption.recall_at_k(S, pos, 0)


def test_joint_embedding_is_unit_length_and_ignores_padding():
    v = caption.caption_vocab()
    torch.manual_seed(0)
    m = caption.JointEmbedding((3, 2, 2), len(v), dim=8, hidden=16, pad=caption.PAD_ID).eval()
    caps = ["a red circle left of a blue square"]
    short, long = caption.encode_captions(v, caps), caption.encode_captions(v, caps, 20)
    with torch.no_grad():
        torch.testing.assert_close(m.texts(short), m.texts(long))
        im = m.images(torch.randn(5, 3, 2, 2))
    torch.testing.assert_close(im.norm(dim=1), torch.ones(5))
    sim, none = caption.ranking_batch(m, (torch.randn(5, 3, 2, 2), caption.encode_captions(v, caps * 5).view(5, 1, -1)))
    assert sim.shape == (5, 5) and none is None


def test_encoder_falls_back_to_the_course_network(monkeypatch):
    monkeypatch.setenv("CVDL_UNAVAILABLE", "mobilenet_v2")
    from cvdl import _fetch
    monkeypatch.setattr(_fetch, "_FAILED", {})                        # leave no remembered failure behind
    ext, note = caption.encoder(smoke=True, device="cpu")
    assert "not available" in note and "CIFAR-10" in note
    out = caption.grid_features(ext, torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 32, 4, 4) and not any(p.requires_grad for p in ext.parameters())   # smoke: width 8 → 4·8
