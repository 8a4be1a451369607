"""cvdl.detection: boxes, IoU, offsets, NMS, proposals, matching and AP — against torchvision.ops,
torchvision's BoxCoder and brute force — and the generated canvas set."""
import math

import numpy as np
import pytest
import torch
import torchvision

from cvdl import detection as D

torch.set_num_threads(1)


def random_boxes(n, seed, size=100.0, min_wh=0.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = min_wh + torch.rand(n, 2, generator=g) * size / 2
    return torch.cat([xy, xy + wh], 1)


# ------------------------------------------------------------------------------------ boxes


def test_box_iou_matches_torchvision_on_random_boxes():
    a, b = random_boxes(30, 0), random_boxes(20, 1)
    torch.testing.assert_close(D.box_iou(a, b), torchvision.ops.box_iou(a, b))
    torch.testing.assert_close(D.box_area(a), torchvision.ops.box_area(a))


def test_box_iou_edge_cases():
    box = torch.tensor([[0.0, 0, 10, 10]])
    assert D.box_iou(box, box).item() == 1.0
    assert D.box_iou(box, torch.tensor([[10.0, 0, 20, 10]])).item() == 0.0          # touching edges
    assert D.box_iou(box, torch.tensor([[5.0, 0, 15, 10]])).item() == pytest.approx(50 / 150)
    # empty sets of boxes
    assert D.box_iou(torch.zeros(0, 4), box).shape == (0, 1)
    assert D.box_iou(box, torch.zeros(0, 4)).shape == (1, 0)
    # degenerate boxes (zero width): IoU 0 with a real box, as torchvision; 0 where torchvision has NaN
    line = torch.tensor([[2.0, 2, 2, 8]])
    torch.testing.assert_close(D.box_iou(line, box), torchvision.ops.box_iou(line, box))
    assert math.isnan(torchvision.ops.box_iou(line, line).item()) and D.box_iou(line, line).item() == 0.0


def test_paired_iou_is_the_diagonal_and_order_corners_makes_boxes():
    a, b = random_boxes(25, 4), random_boxes(25, 5)
    torch.testing.assert_close(D.paired_iou(a, b), torchvision.ops.box_iou(a, b).diagonal())
    assert D.paired_iou(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0,)
    with pytest.raises(ValueError, match="pair up"):
        D.paired_iou(a[:2], b[:3])
    raw = torch.tensor([[10.0, 8, 2, 12]])
    assert D.order_corners(raw).tolist() == [[2.0, 8, 10, 12]]
    assert D.clip_boxes(torch.tensor([[-3.0, 5, 100, 90]]), 96).tolist() == [[0.0, 5, 96, 90]]


def test_boxes_with_x2_below_x1_raise():
    with pytest.raises(ValueError, match="x2 < x1"):
        D.box_iou(torch.tensor([[5.0, 0, 1, 4]]), torch.tensor([[0.0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="y2 < y1"):
        D.box_area(torch.tensor([[0.0, 5, 1, 4]]))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        D.box_iou(torch.zeros(3, 3), torch.zeros(1, 4))


def test_encode_decode_round_trip_and_torchvision_boxcoder():
    from torchvision.models.detection._utils import BoxCoder

    p, g = random_boxes(50, 2, min_wh=1.0), random_boxes(50, 3, min_wh=1.0)
    d = D.encode(p, g)
    torch.testing.assert_close(d, BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(g, p))
    torch.testing.assert_close(D.decode(p, d), g, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(D.decode(p, d), BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(d, p), atol=1e-4, rtol=1e-5)
    # zero offsets give the proposal back; a proposal of zero width cannot be encoded
    torch.testing.assert_close(D.decode(p, torch.zeros_like(p)), p)
    with pytest.raises(ValueError, match="positive width"):
        D.encode(torch.tensor([[0.0, 0, 0, 5]]), torch.tensor([[0.0, 0, 1, 5]]))
    with pytest.raises(ValueError, match="pair up"):
        D.encode(p[:3], g[:4])
    # a wild dw is clamped as torchvision clamps it, so nothing overflows
    wild = D.decode(p[:1], torch.tensor([[0.0, 0.0, 100.0, 0.0]]))
    assert torch.isfinite(wild).all()


# -------------------------------------------------------------------------------------- NMS


@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_matches_torchvision(thr):
    for seed in range(5):
        b = random_boxes(60, seed, size=50.0, min_wh=2.0)
        s = torch.rand(60, generator=torch.Generator().manual_seed(seed + 10))
        assert torch.equal(D.nms(b, s, thr), torchvision.ops.nms(b, s, thr))
        lab = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(seed + 20))
        assert torch.equal(D.batched_nms(b, s, lab, thr), torchvision.ops.batched_nms(b, s, lab, thr))


def test_nms_edge_cases():
    assert D.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    assert D.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5).numel() == 0
    # identical boxes: all but the best suppressed
    b = torch.tensor([[0.0, 0, 10, 10]] * 4)
    assert D.nms(b, torch.tensor([0.1, 0.9, 0.5, 0.3]), 0.5).tolist() == [1]
    # threshold 1.0 suppresses nothing, IoU must be *greater* than the threshold
    assert sorted(D.nms(b, torch.tensor([0.1, 0.9, 0.5, 0.3]), 1.0).tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="iou_threshold"):
        D.nms(b, torch.ones(4), 1.5)
    with pytest.raises(ValueError, match="scores"):
        D.nms(b, torch.ones(3), 0.5)


# ---------------------------------------------------------------------------------- proposals


def test_sliding_windows_count_and_placement():
    w = D.sliding_windows(96, sizes=(32,), ratios=(1.0,), stride=8)
    assert len(w) == ((96 - 32) // 8 + 1) ** 2 and w.max() <= 96 and w.min() >= 0
    w2 = D.sliding_windows(96, sizes=(16, 32), ratios=(0.5, 1.0, 2.0), stride=4)
    expect = 0
    for s in (16, 32):
        for r in (0.5, 1.0, 2.0):
            ww, hh = round(s * math.sqrt(r)), round(s / math.sqrt(r))
            expect += ((96 - ww) // 4 + 1) * ((96 - hh) // 4 + 1)
    assert len(w2) == expect
    assert D.sliding_windows(10, sizes=(32,)).shape == (0, 4)


def test_selective_search_finds_two_flat_objects():
    img = np.full((64, 64, 3), 40, dtype=np.uint8)
    img[8:24, 10:30] = (250, 20, 20)
    img[40:60, 36:56] = (20, 20, 250)
    boxes = D.selective_search(img, scales=(50,), min_size=10)
    truth = torch.tensor([[10.0, 8, 30, 24], [36.0, 40, 56, 60]])
    iou = D.box_iou(truth, boxes).amax(1)
    assert (iou > 0.95).all(), iou
    assert D.proposal_recall(boxes, truth) == 1.0
    assert len(boxes) == len({tuple(b) for b in boxes.tolist()}), "duplicates should be dropped"
    # the whole image, the last merge, is among the proposals; a tensor input gives the same boxes
    assert [0.0, 0.0, 64.0, 64.0] in boxes.tolist()
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    assert torch.equal(D.selective_search(t, scales=(50,), min_size=10), boxes)
    with pytest.raises(ValueError, match="uint8"):
        D.selective_search(np.zeros((8, 8), dtype=np.uint8))


def test_proposal_recall_counts_covered_truth():
    truth = [torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]]), torch.tensor([[0.0, 0, 5, 5]])]
    props = [torch.tensor([[0.0, 0, 10, 11]]), torch.zeros(0, 4)]
    assert D.proposal_recall(props, truth) == pytest.approx(1 / 3)


def test_warp_resizes_each_box_to_a_square():
    img = torch.zeros(1, 1, 20, 20)
    img[0, 0, 5:10, 2:12] = 1.0                               # a 10 × 5 bright rectangle
    out = D.warp(img, [torch.tensor([[2.0, 5, 12, 10], [0.0, 0, 20, 20]])], size=8)
    assert out.shape == (2, 1, 8, 8)
    assert out[0, :, 1:-1, 1:-1].min() > 0.99                 # the box's inside, stretched to fill
    assert out[0].min() > 0.5                                 # (edge samples blend with the outside)
    assert 0.1 < out[1].mean() < 0.2                          # the whole image: 50 / 400 bright


# ------------------------------------------------------------------------------- matching, AP


def test_match_is_greedy_by_score_one_detection_per_object():
    gt = torch.tensor([[0.0, 0, 10, 10]])
    det = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 9], [50.0, 50, 60, 60]])
    tp = D.match(det, torch.tensor([0.5, 0.9, 0.8]), gt)
    assert tp.tolist() == [False, True, False]                # the higher score claims it; a duplicate is an FP
    assert D.match(torch.zeros(0, 4), torch.zeros(0), gt).numel() == 0
    assert D.match(det, torch.ones(3), torch.zeros(0, 4)).tolist() == [False] * 3


def brute_force_ap(scores, tp, n_truth, grid=100_000):
    """The area under the interpolated PR curve on a fine grid of recall levels."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(tp, dtype=float)[order]
    ctp, cfp = np.cumsum(hits), np.cumsum(1 - hits)
    rec, prec = ctp / n_truth, ctp / (ctp + cfp)
    t = (np.arange(grid) + 0.5) / grid                            # recall levels, midpoints of a fine grid
    reach = rec[None, :] >= t[:, None] - 1e-12                     # [grid, N]: ranks at or beyond each level
    return np.where(reach, prec[None, :], 0.0).max(1).mean()


def test_average_precision_hand_examples():
    # 3 objects; ranked detections TP, FP, TP, FP, TP: precisions 1, 1/2, 2/3, 1/2, 3/5
    ap, rec, prec = D.average_precision([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 1], 3)
    np.testing.assert_allclose(rec, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(prec, [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    assert ap == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert D.average_precision([0.9, 0.1], [1, 1], 2)[0] == 1.0            # all found, none wrong
    assert D.average_precision([0.9], [1], 4)[0] == 0.25                    # one of four objects, perfectly
    assert D.average_precision([0.9, 0.8], [0, 1], 1)[0] == 0.5
    assert D.average_precision([], [], 3)[0] == 0.0                         # nothing detected
    assert math.isnan(D.average_precision([], [], 0)[0])                    # nothing to find
    with pytest.raises(ValueError, match="n_truth"):
        D.average_precision([0.5, 0.4], [1, 1], 1)


def test_average_precision_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        scores, tp = rng.random(n), rng.random(n) < 0.5
        n_truth = int(tp.sum()) + int(rng.integers(0, 5))
        if n_truth == 0:
            continue
        ap = D.average_precision(scores, tp, n_truth)[0]
        assert ap == pytest.approx(brute_force_ap(scores, tp, n_truth), abs=1e-4)


def test_mean_ap_skips_classes_without_truth():
    truths = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])},
              {"boxes": torch.tensor([[5.0, 5, 20, 20]]), "labels": torch.tensor([2])}]
    dets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [30.0, 30, 40, 40]]), "scores": torch.tensor([0.9, 0.8]),
             "labels": torch.tensor([1, 3])},
            {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    out = D.mean_ap(dets, truths, n_classes=4)
    assert out["ap"][1] == 1.0 and out["ap"][2] == 0.0 and math.isnan(out["ap"][3])
    assert out["map"] == 0.5
    with pytest.raises(ValueError, match="one detection dict per image"):
        D.mean_ap(dets[:1], truths, 4)


# ------------------------------------------------------------------------------- the canvases


def test_canvases_are_deterministic_and_consistent(tmp_path, monkeypatch):
    monkeypatch.setenv("CVDL_CACHE", str(tmp_path))
    a = D.canvases("val", n=40)
    b = D.canvases("val", n=40)                               # from the cache now
    assert torch.equal(a.images, b.images) and all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes))
    assert a.images.shape == (40, 3, D.IMAGE_SIZE, D.IMAGE_SIZE) and a.images.dtype == torch.uint8
    for i in range(40):
        t = a.target(i)
        assert 1 <= len(t["labels"]) <= 4 and set(t["labels"].tolist()) <= {1, 2, 3, 4}
        for k, (box, mask) in enumerate(zip(t["boxes"], t["masks"])):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], "box = the mask's extent"
            assert (a.semantic[i][mask.bool()] == t["labels"][k]).all()
        assert ((a.semantic[i] > 0) == (a.instances[i] > 0)).all()
        if len(t["boxes"]) > 1:
            iou = D.box_iou(t["boxes"], t["boxes"]).fill_diagonal_(0)
            assert iou.max() < 0.5
    # the first n are the same canvases at any n, generated afresh or from a longer cached run
    assert torch.equal(D.canvases("val", n=10).images, a.images[:10])
    for f in (tmp_path / "generated").glob("canvases-*"):
        f.unlink()
    ten = D.canvases("val", n=10)
    assert not ten.source.startswith("cache") and torch.equal(ten.images, a.images[:10])
    again = D.canvases("val", n=40)                            # more than the cache holds: generated again
    assert torch.equal(again.images, a.images) and all(torch.equal(x, y) for x, y in zip(again.boxes, a.boxes))
    shapes = D.canvases("val", n=20, digits=False)
    assert all(4 not in lab.tolist() for lab in shapes.labels) and shapes.source == "shapes only"
    with pytest.raises(ValueError, match="split"):
        D.canvases("dev")
    with pytest.raises(ValueError, match="objects"):
        D.canvases("val", objects=(0, 2))
    with pytest.raises(ValueError, match="has 300"):
        D.canvases("val", n=301)


def test_canvases_fall_back_to_the_digits_set_without_mnist(tmp_path, monkeypatch):
    from cvdl import _fetch

    monkeypatch.setenv("CVDL_CACHE", str(tmp_path))
    monkeypatch.setenv("CVDL_UNAVAILABLE", "mnist")
    monkeypatch.setattr(_fetch, "_FAILED", {})
    s = D.canvases("val", n=30)
    assert "fallback" in s.source, s.source
    assert any(4 in lab.tolist() for lab in s.labels), "digits still appear, from scikit-learn's set"
    assert list((tmp_path / "generated").glob("canvases-*-digits-val-*.npz")), "cached under its own key"
