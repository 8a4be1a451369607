"""Object detection (notebook 10): boxes, region proposals, R-CNN's pieces, NMS, average precision,
and the generated detection-and-segmentation set that notebooks 10 and 11 share.

Boxes are ``(x1, y1, x2, y2)`` in pixels, torchvision's format: ``boxes (Tensor[N, 4])`` with
``x1 <= x2`` and ``y1 <= y2`` (a box with ``x2 < x1`` is a bug in the caller and raises
``ValueError``). A box's width is ``x2 - x1`` (continuous coordinates, no ``+ 1``), as in
``torchvision.ops``. Every from-scratch function here is checked against ``torchvision.ops`` (or a
brute-force computation) in ``tests/test_detection.py``.

Sources: R. Girshick et al., *Rich feature hierarchies for accurate object detection and semantic
segmentation* (R-CNN, CVPR 2014); J. Uijlings et al., *Selective search for object recognition*
(IJCV 2013); M. Everingham et al., *The PASCAL visual object classes challenge: a retrospective*
(IJCV 2015) for AP.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from . import _checks

__all__ = ["CLASSES", "IMAGE_SIZE", "SPLITS", "DetectionSet", "canvases", "check_boxes", "box_area",
           "box_iou", "paired_iou", "order_corners", "clip_boxes", "encode", "decode", "nms", "batched_nms", "sliding_windows", "selective_search",
           "proposal_recall", "warp", "match", "average_precision", "mean_ap", "draw"]

CLASSES = ("background", "circle", "square", "triangle", "digit")   # label 0 is the background
IMAGE_SIZE = 96
SPLITS = {"train": (2000, 0), "val": (300, 1), "test": (300, 2)}   # images, seed
CANVAS_VERSION = 1            # bump when the construction changes: the cache key includes it
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230), (255, 255, 255), (0, 0, 0)], dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------------------------


def check_boxes(boxes, name: str = "boxes") -> torch.Tensor:
    """``boxes`` as a float tensor ``[N, 4]``; ``ValueError`` unless every box has ``x1 <= x2`` and
    ``y1 <= y2`` (zero width or height is allowed: a degenerate box, of area 0)."""
    b = torch.as_tensor(boxes)
    if b.ndim != 2 or b.shape[-1] != 4:
        if b.numel() == 0:
            return b.reshape(0, 4).float()
        raise ValueError(f"{name} must be [N, 4] (x1, y1, x2, y2), got shape {tuple(b.shape)}")
    if not b.is_floating_point():
        b = b.float()
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"{name}[{i}] = {b[i].tolist()} has x2 < x1 or y2 < y1; boxes are (x1, y1, x2, y2)")
    return b


def box_area(boxes) -> torch.Tensor:
    """``(x2 - x1) · (y2 - y1)``: ``[N, 4] → [N]``."""
    b = check_boxes(boxes)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_iou(boxes1, boxes2) -> torch.Tensor:
    """Intersection over union of every pair: ``[N, 4], [M, 4] → [N, M]``.

    IoU = area(A ∩ B) / area(A ∪ B). Where the union is empty (two degenerate boxes at one point or
    on one line) the IoU is defined as 0 here; ``torchvision.ops.box_iou`` returns NaN there.
    """
    a, b = check_boxes(boxes1, "boxes1"), check_boxes(boxes2, "boxes2")
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])                 # [N, M, 2]
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])                 # [N, M, 2]
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]                                    # [N, M]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def paired_iou(boxes1, boxes2) -> torch.Tensor:
    """IoU of each box with its partner: ``[N, 4], [N, 4] → [N]`` (the diagonal of
    :func:`box_iou`, without the ``[N, N]`` matrix)."""
    a, b = check_boxes(boxes1, "boxes1"), check_boxes(boxes2, "boxes2")
    if a.shape != b.shape:
        raise ValueError(f"boxes1 and boxes2 must pair up, got {tuple(a.shape)} and {tuple(b.shape)}")
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)   # [N, 2]
    inter = wh[:, 0] * wh[:, 1]
    union = box_area(a) + box_area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def order_corners(boxes) -> torch.Tensor:
    """Any four numbers per row → a valid box ``(min x, min y, max x, max y)``: ``[N, 4] → [N, 4]``
    (for a network's raw box outputs, which can come out with ``x2 < x1``)."""
    b = torch.as_tensor(boxes)
    return torch.stack([torch.minimum(b[:, 0], b[:, 2]), torch.minimum(b[:, 1], b[:, 3]),
                        torch.maximum(b[:, 0], b[:, 2]), torch.maximum(b[:, 1], b[:, 3])], 1)


def clip_boxes(boxes, size: int) -> torch.Tensor:
    """Boxes clipped to a ``size × size`` image: ``[N, 4] → [N, 4]``."""
    return check_boxes(boxes).clamp(0, size)


def _centre_size(b: torch.Tensor):
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return b[:, 0] + 0.5 * w, b[:, 1] + 0.5 * h, w, h


def encode(proposals, targets) -> torch.Tensor:
    """R-CNN's box offsets from ``proposals`` P to ``targets`` G, both ``[N, 4]`` → ``[N, 4]``:
    ``dx = (Gx − Px) / Pw``, ``dy = (Gy − Py) / Ph``, ``dw = log(Gw / Pw)``, ``dh = log(Gh / Ph)``
    (centres and sizes; scale-invariant shifts, log-space sizes). Proposals need a positive
    width and height (``ValueError`` otherwise)."""
    p, g = check_boxes(proposals, "proposals"), check_boxes(targets, "targets")
    if p.shape != g.shape:
        raise ValueError(f"proposals and targets must pair up, got {tuple(p.shape)} and {tuple(g.shape)}")
    px, py, pw, ph = _centre_size(p)
    gx, gy, gw, gh = _centre_size(g)
    if ((pw <= 0) | (ph <= 0)).any() or ((gw <= 0) | (gh <= 0)).any():
        raise ValueError("encode needs boxes of positive width and height (log of a zero size)")
    return torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=1)


def decode(proposals, deltas, clip: float | None = math.log(1000.0 / 16)) -> torch.Tensor:
    """The inverse of :func:`encode`: apply offsets ``deltas [N, 4]`` to ``proposals [N, 4]`` →
    boxes ``[N, 4]``. ``dw``, ``dh`` are clamped at ``clip`` before ``exp`` (torchvision's
    ``BoxCoder`` does the same, so that one wild output cannot overflow)."""
    p = check_boxes(proposals, "proposals")
    d = torch.as_tensor(deltas, dtype=p.dtype)
    if d.shape != p.shape:
        raise ValueError(f"proposals and deltas must pair up, got {tuple(p.shape)} and {tuple(d.shape)}")
    px, py, pw, ph = _centre_size(p)
    dw, dh = (d[:, 2], d[:, 3]) if clip is None else (d[:, 2].clamp(max=clip), d[:, 3].clamp(max=clip))
    cx, cy = px + d[:, 0] * pw, py + d[:, 1] * ph
    w, h = pw * torch.exp(dw), ph * torch.exp(dh)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)


def nms(boxes, scores, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression → indices of the kept boxes, by decreasing score (int64 ``[K]``).

    Repeatedly keep the highest-scoring remaining box and drop every remaining box whose IoU with
    it is *greater than* ``iou_threshold`` (``torchvision.ops.nms``'s rule)."""
    b = check_boxes(boxes)
    s = torch.as_tensor(scores, dtype=torch.float32)
    if s.shape != (len(b),):
        raise ValueError(f"scores must be [N] for boxes [N, 4], got {tuple(s.shape)} for {tuple(b.shape)}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    order = torch.argsort(s, descending=True, stable=True)
    iou = box_iou(b, b)                                               # [N, N]
    removed = torch.zeros(len(b), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if removed[i]:
            continue
        keep.append(i)
        removed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def batched_nms(boxes, scores, labels, iou_threshold: float) -> torch.Tensor:
    """:func:`nms` within each class separately (boxes of different ``labels [N]`` never suppress
    each other) → kept indices by decreasing score, as ``torchvision.ops.batched_nms``."""
    b = check_boxes(boxes)
    s = torch.as_tensor(scores, dtype=torch.float32)
    lab = torch.as_tensor(labels)
    if lab.shape != (len(b),):
        raise ValueError(f"labels must be [N] for boxes [N, 4], got {tuple(lab.shape)}")
    keep = [torch.nonzero(lab == c).flatten()[nms(b[lab == c], s[lab == c], iou_threshold)] for c in lab.unique()]
    keep = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.int64)
    return keep[torch.argsort(s[keep], descending=True, stable=True)]


# ----------------------------------------------------------------------------------------------
# Windows and region proposals
# ----------------------------------------------------------------------------------------------


def sliding_windows(image_size: int, sizes=(16, 24, 32, 48), ratios=(0.5, 1.0, 2.0), stride: int = 4) -> torch.Tensor:
    """Every window of area ``size²`` and aspect ratio ``w / h = ratio`` placed every ``stride``
    pixels inside an ``image_size × image_size`` image → boxes ``[N, 4]``. A window of width ``w``
    fits ``⌊(image_size − w) / stride⌋ + 1`` times across."""
    _checks.positive_int(image_size=image_size, stride=stride)
    out = []
    for s in sizes:
        for r in ratios:
            w, h = round(s * math.sqrt(r)), round(s / math.sqrt(r))
            if w > image_size or h > image_size:
                continue
            xs = torch.arange(0, image_size - w + 1, stride, dtype=torch.float32)
            ys = torch.arange(0, image_size - h + 1, stride, dtype=torch.float32)
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            out.append(torch.stack([gx.flatten(), gy.flatten(), gx.flatten() + w, gy.flatten() + h], 1))
    return torch.cat(out) if out else torch.zeros(0, 4)


def _colour_hist(pixels: np.ndarray, bins: int = 25) -> np.ndarray:
    """L1-normalised colour histogram of ``pixels [n, 3]`` (uint8): ``bins`` per channel → ``[3·bins]``."""
    h = np.concatenate([np.bincount((pixels[:, c].astype(np.int64) * bins) // 256, minlength=bins) for c in range(3)])
    return h / max(h.sum(), 1)


def selective_search(image, scales=(50, 150), sigma: float = 0.8, min_size: int = 20, seed: int = 0) -> torch.Tensor:
    """Region proposals by hierarchical grouping (Uijlings et al. 2013), ranked → boxes ``[N, 4]``.

    For each felzenszwalb ``scale``: start from scikit-image's ``felzenszwalb`` regions; repeatedly
    merge the most similar *adjacent* pair, where similarity = colour (histogram intersection of
    25-bin-per-channel histograms) + size (``1 − (|a| + |b|) / |image|``: small regions merge
    first) + fill (``1 − (|box(a ∪ b)| − |a| − |b|) / |image|``: regions that fill each other's
    box merge first); every region of the hierarchy, initial and merged, is a proposal. Ranking:
    the paper's — each box gets its level in the hierarchy (1 = the last merge, the whole image)
    times a uniform random number (``seed``), lowest first — then duplicates are dropped.

    Args:
        image (uint8 array [H, W, 3], or Tensor[3, H, W] in [0, 1] or uint8).
    """
    from skimage.segmentation import felzenszwalb

    img = image
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu()
        if img.is_floating_point():
            img = (img.clamp(0, 1) * 255).round().to(torch.uint8)
        img = img.permute(1, 2, 0).numpy()
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3] or a [3, H, W] tensor, got {img.dtype} {img.shape}")
    H, W = img.shape[:2]
    rng = np.random.default_rng(seed)
    ranked = []                                         # (rank value, box)
    for scale in scales:
        seg = felzenszwalb(img, scale=scale, sigma=sigma, min_size=min_size)   # [H, W] region ids
        R = int(seg.max()) + 1
        flat, pix = seg.ravel(), img.reshape(-1, 3)
        ys, xs = np.divmod(np.arange(H * W), W)
        size = np.bincount(flat, minlength=R).astype(np.float64)
        box = np.zeros((R, 4))                          # each region's (x1, y1, x2, y2)
        box[:, 0], box[:, 1] = W, H
        np.minimum.at(box[:, 0], flat, xs); np.minimum.at(box[:, 1], flat, ys)
        np.maximum.at(box[:, 2], flat, xs + 1); np.maximum.at(box[:, 3], flat, ys + 1)
        regions = {r: {"size": size[r], "box": box[r].copy(), "hist": _colour_hist(pix[flat == r])} for r in range(R)}
        pairs = set()
        for a, b in ((seg[:, :-1], seg[:, 1:]), (seg[:-1, :], seg[1:, :])):
            d = a != b
            for u, v in zip(a[d].tolist(), b[d].tolist()):
                pairs.add((min(u, v), max(u, v)))
        neigh = {r: set() for r in regions}
        for u, v in pairs:
            neigh[u].add(v); neigh[v].add(u)
        total = float(H * W)

        def sim(u, v):
            ru, rv = regions[u], regions[v]
            bu, bv = ru["box"], rv["box"]
            bb = (max(bu[2], bv[2]) - min(bu[0], bv[0])) * (max(bu[3], bv[3]) - min(bu[1], bv[1]))
            return (np.minimum(ru["hist"], rv["hist"]).sum() + 1 - (ru["size"] + rv["size"]) / total
                    + 1 - (bb - ru["size"] - rv["size"]) / total)

        S = {(u, v): sim(u, v) for u, v in pairs}
        order = list(range(R))                          # regions in order of creation
        nxt = R
        while S:
            u, v = max(S, key=S.get)
            ru, rv = regions[u], regions[v]
            n = ru["size"] + rv["size"]
            regions[nxt] = {"size": n, "box": np.r_[np.minimum(ru["box"][:2], rv["box"][:2]),
                                                     np.maximum(ru["box"][2:], rv["box"][2:])],
                            "hist": (ru["size"] * ru["hist"] + rv["size"] * rv["hist"]) / n}
            S = {k: s for k, s in S.items() if u not in k and v not in k}
            neigh[nxt] = (neigh.pop(u) | neigh.pop(v)) - {u, v}
            for w in neigh[nxt]:
                neigh[w] -= {u, v}
                neigh[w].add(nxt)
                S[(w, nxt)] = sim(w, nxt)
            order.append(nxt)
            nxt += 1
        levels = len(order)
        for pos, r in enumerate(order):                 # level 1 = the last merge
            ranked.append(((levels - pos) * rng.random(), tuple(regions[r]["box"].tolist())))
    ranked.sort(key=lambda t: t[0])
    seen, boxes = set(), []
    for _, b in ranked:
        if b not in seen:
            seen.add(b)
            boxes.append(b)
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def proposal_recall(proposals, truth, iou_threshold: float = 0.5) -> float:
    """The fraction of ground-truth boxes ``truth [M, 4]`` covered by at least one of
    ``proposals [N, 4]`` at IoU ≥ ``iou_threshold`` (lists of per-image tensors are pooled)."""
    if isinstance(truth, (list, tuple)):
        hits = [(box_iou(t, p).amax(1) >= iou_threshold).sum() if len(p) else torch.tensor(0)
                for p, t in zip(proposals, truth)]
        n = sum(len(t) for t in truth)
        return float(sum(int(h) for h in hits) / max(n, 1))
    return proposal_recall([proposals], [truth], iou_threshold)


def warp(images: torch.Tensor, boxes: list[torch.Tensor], size: int = 32) -> torch.Tensor:
    """R-CNN's warp: crop every box of every image and resize it to ``size × size`` regardless of
    its aspect ratio (bilinear, with ``torchvision.ops.roi_align``). ``images [N, C, H, W]``,
    ``boxes`` a list of ``N`` tensors ``[n_i, 4]`` → ``[Σ n_i, C, size, size]``."""
    from torchvision.ops import roi_align

    _checks.images(images, "images")
    boxes = [check_boxes(b).to(images.dtype).to(images.device) for b in boxes]
    return roi_align(images, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)


# ----------------------------------------------------------------------------------------------
# Matching and average precision
# ----------------------------------------------------------------------------------------------


def match(det_boxes, det_scores, gt_boxes, iou_threshold: float = 0.5) -> torch.Tensor:
    """Which detections of one image and one class are true positives (bool ``[N]``), PASCAL VOC's
    way: in decreasing score, a detection is a true positive if its best-overlapping ground-truth
    box has IoU ≥ ``iou_threshold`` and was not matched by a higher-scoring detection already; a
    second detection of the same object is a false positive."""
    d, g = check_boxes(det_boxes, "det_boxes"), check_boxes(gt_boxes, "gt_boxes")
    s = torch.as_tensor(det_scores, dtype=torch.float32)
    tp = torch.zeros(len(d), dtype=torch.bool)
    if len(d) == 0 or len(g) == 0:
        return tp
    iou = box_iou(d, g)                                              # [N, M]
    taken = torch.zeros(len(g), dtype=torch.bool)
    for i in torch.argsort(s, descending=True, stable=True).tolist():
        j = int(iou[i].argmax())
        if iou[i, j] >= iou_threshold and not taken[j]:
            tp[i], taken[j] = True, True
    return tp


def average_precision(scores, tp, n_truth: int) -> tuple[float, np.ndarray, np.ndarray]:
    """All-point interpolated AP (PASCAL VOC 2010 and later) → ``(AP, recall [N], precision [N])``.

    Detections sorted by decreasing ``scores [N]`` with true-positive flags ``tp [N]``, against
    ``n_truth`` ground-truth objects: precision at each rank is made monotone (each point takes
    the highest precision at any higher recall), and AP is the area under that step curve,
    ``Σ (r_k − r_{k−1}) · p_interp(r_k)``. Not VOC 2007's 11-point average and not COCO's
    101-point one over IoU 0.5:0.95. ``n_truth = 0``: AP is NaN (no object to find; :func:`mean_ap`
    leaves such a class out).
    """
    s = torch.as_tensor(scores, dtype=torch.float64)
    t = torch.as_tensor(tp, dtype=torch.bool)
    if s.shape != t.shape:
        raise ValueError(f"scores and tp must have the same shape, got {tuple(s.shape)} and {tuple(t.shape)}")
    if n_truth < 0 or n_truth < int(t.sum()):
        raise ValueError(f"n_truth must be ≥ the number of true positives ({int(t.sum())}), got {n_truth}")
    if n_truth == 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    order = torch.argsort(s, descending=True, stable=True)
    hits = t[order].double()
    ctp, cfp = hits.cumsum(0), (1 - hits).cumsum(0)
    recall = (ctp / n_truth).numpy()
    precision = (ctp / (ctp + cfp)).numpy()
    if len(recall) == 0:
        return 0.0, recall, precision
    envelope = np.maximum.accumulate(precision[::-1])[::-1]         # best precision at this recall or beyond
    steps = np.diff(np.r_[0.0, recall])
    return float((steps * envelope).sum()), recall, precision


def mean_ap(detections, truths, n_classes: int, iou_threshold: float = 0.5) -> dict:
    """mAP over classes ``1 … n_classes − 1`` (0 is the background) on a set of images.

    ``detections``: per image a dict ``{"boxes" [N, 4], "scores" [N], "labels" [N]}``; ``truths``:
    per image ``{"boxes" [M, 4], "labels" [M]}``. → ``{"map": float, "ap": {class: AP}}``; a class
    with no ground truth anywhere has AP NaN and is left out of the mean (as COCO does).
    """
    if len(detections) != len(truths):
        raise ValueError(f"one detection dict per image: got {len(detections)} for {len(truths)} images")
    ap = {}
    for c in range(1, n_classes):
        scores, tps, n = [], [], 0
        for det, gt in zip(detections, truths):
            dm, gm = det["labels"] == c, gt["labels"] == c
            n += int(gm.sum())
            scores.append(torch.as_tensor(det["scores"])[dm].float())
            tps.append(match(det["boxes"][dm], det["scores"][dm], gt["boxes"][gm], iou_threshold))
        ap[c] = average_precision(torch.cat(scores), torch.cat(tps), n)[0]
    vals = [v for v in ap.values() if not math.isnan(v)]
    return {"map": float(np.mean(vals)) if vals else float("nan"), "ap": ap}


# ----------------------------------------------------------------------------------------------
# The generated set: objects on photo crops, with boxes and masks
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DetectionSet:
    """Canvases with objects: ``images`` uint8 ``[N, 3, S, S]``; per image ``boxes[i]`` float
    ``[n_i, 4]`` (x1, y1, x2, y2, the visible pixels' extent) and ``labels[i]`` int64 ``[n_i]``
    (1 … 4, :data:`CLASSES`); ``semantic`` uint8 ``[N, S, S]`` (each pixel's class, 0 =
    background) and ``instances`` uint8 ``[N, S, S]`` (0 = background, ``k + 1`` = object ``k``)."""

    images: torch.Tensor
    boxes: list
    labels: list
    semantic: torch.Tensor
    instances: torch.Tensor
    split: str
    source: str
    classes: tuple = CLASSES

    def __len__(self) -> int:
        return len(self.images)

    def float(self) -> torch.Tensor:
        """The images as float ``[N, 3, S, S]`` in [0, 1]."""
        return self.images.float() / 255

    def target(self, i: int) -> dict:
        """Image ``i``'s target in torchvision's detection format: ``boxes``, ``labels`` and
        ``masks`` (uint8 ``[n_i, S, S]``, one binary mask per object)."""
        k = len(self.labels[i])
        masks = (self.instances[i][None] == torch.arange(1, k + 1, dtype=torch.uint8)[:, None, None]).to(torch.uint8)
        return {"boxes": self.boxes[i], "labels": self.labels[i], "masks": masks}


def _shape_mask(shape: str, size: int, rng) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    c = size / 2
    if shape == "circle":
        return (xx - c) ** 2 + (yy - c) ** 2 <= c * c
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    # triangle, apex up: inside the two slanted edges and above the base
    return (yy >= 0) & (np.abs(xx - c) <= yy / 2)


def _digit_mask(digit: np.ndarray, height: int) -> np.ndarray:
    import torch.nn.functional as F

    ys, xs = np.nonzero(digit > 0)
    crop = digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32) / 255
    h, w = crop.shape
    width = max(4, round(height * w / h))
    t = F.interpolate(torch.from_numpy(crop)[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return t[0, 0].numpy() > 0.5


def canvases(split: str = "train", n: int | None = None, objects: tuple[int, int] = (1, 4),
             digits: bool = True) -> DetectionSet:
    """The generated detection-and-segmentation set (notebooks 10 and 11), cached.

    Each ``IMAGE_SIZE × IMAGE_SIZE`` canvas is a crop of one of :data:`cvdl.transfer.PHOTO_POOL`'s
    photos (train canvases from the left 75 % of each photo, val and test from the right 25 %:
    test backgrounds are never training backgrounds) with ``objects`` = (fewest, most) objects
    pasted in one of ten solid colours: circles, squares and triangles 14–34 px across, and
    digits 18–34 px tall (MNIST's, from the matching split — scikit-learn's digits when MNIST is
    not here — or none when ``digits=False``: shapes only). Objects overlap little (IoU of
    their boxes ≤ 0.15; later ones occlude earlier ones, and each keeps at least 60 % of its
    pixels); boxes and masks are those of the visible pixels. Splits (:data:`SPLITS`): train
    2 000 canvases, val 300, test 300, each from its own seed; ``n`` keeps the first ``n`` (the
    same canvases at any ``n``; only as many as were asked for are generated and cached).
    """
    from . import config, data, transfer
    from ._io import atomic_path

    size, seed, keep = _checks.split_size(split, SPLITS, n, "canvases")
    lo_n, hi_n = objects
    if not 1 <= lo_n <= hi_n <= 8:
        raise ValueError(f"objects must be (fewest, most) with 1 <= fewest <= most <= 8, got {objects}")
    if digits:
        mn = data.load_mnist("train" if split == "train" else "test")
        tag, source = ("mnist" if not mn.fallback else "digits"), f"digits from {mn.name} ({mn.source})"
    else:
        mn, tag, source = None, "shapes", "shapes only"
    path = config.cache_dir() / "generated" / f"canvases-v{CANVAS_VERSION}-{tag}-{split}-{lo_n}-{hi_n}.npz"
    cached = None
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            if len(z["counts"]) >= keep:
                cached = tuple(z[k] for k in ("images", "semantic", "instances", "boxes", "labels", "counts"))
    if cached is not None:
        images, semantic, instances, flat_boxes, flat_labels, counts = cached
        source = f"cache ({source})"
    else:
        # canvases are drawn one after another from one seeded stream, so the first `keep` are the
        # same whatever the split's size: generate (and cache) only as many as were asked for
        images, semantic, instances, flat_boxes, flat_labels, counts = _generate(split, keep, seed, objects, mn)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, images=images, semantic=semantic, instances=instances, boxes=flat_boxes,
                         labels=flat_labels, counts=counts)
    ends = np.cumsum(counts)
    starts = ends - counts
    boxes = [torch.from_numpy(flat_boxes[a:b].astype(np.float32)) for a, b in zip(starts[:keep], ends[:keep])]
    labels = [torch.from_numpy(flat_labels[a:b].astype(np.int64)) for a, b in zip(starts[:keep], ends[:keep])]
    return DetectionSet(torch.from_numpy(images[:keep]), boxes, labels, torch.from_numpy(semantic[:keep]),
                        torch.from_numpy(instances[:keep]), split, source)


def _generate(split, size, seed, objects, mn):
    from . import transfer

    S = IMAGE_SIZE
    rng = np.random.default_rng(7000 + seed)
    photos = transfer._photos()
    images = np.empty((size, S, S, 3), dtype=np.uint8)
    semantic = np.zeros((size, S, S), dtype=np.uint8)
    instances = np.zeros((size, S, S), dtype=np.uint8)
    all_boxes, all_labels, counts = [], [], []
    kinds = (1, 2, 3, 4) if mn is not None else (1, 2, 3)
    for i in range(size):
        p = photos[rng.integers(len(photos))]
        H, W = p.shape[:2]
        cut = int(W * transfer.TRAIN_FRACTION)
        lo, hi = (0, cut - S) if split == "train" else (cut, W - S)
        x0, y0 = rng.integers(lo, hi + 1), rng.integers(0, H - S + 1)
        img = p[y0:y0 + S, x0:x0 + S].copy()
        inst = np.zeros((S, S), dtype=np.uint8)
        placed, labels, areas = [], [], []               # drawn boxes, labels, drawn pixel counts
        for _ in range(rng.integers(objects[0], objects[1] + 1)):
            for _attempt in range(30):
                label = int(kinds[rng.integers(len(kinds))])
                if label == 4:
                    m = _digit_mask(mn.images[rng.integers(len(mn))][0].numpy(), int(rng.integers(18, 35)))
                else:
                    m = _shape_mask(CLASSES[label], int(rng.integers(14, 35)), rng)
                h, w = m.shape
                x, y = int(rng.integers(0, S - w + 1)), int(rng.integers(0, S - h + 1))
                box = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)
                if placed and float(box_iou(box, torch.tensor(placed)).max()) > 0.15:
                    continue
                trial = inst.copy()
                trial[y:y + h, x:x + w][m] = len(labels) + 1
                if all((trial == k + 1).sum() >= 0.6 * areas[k] for k in range(len(labels))):
                    break
            else:
                continue
            colour = PALETTE[rng.integers(len(PALETTE))]
            region = img[y:y + h, x:x + w]
            region[m] = colour
            inst = trial
            placed.append([x, y, x + w, y + h])
            labels.append(label)
            areas.append(int(m.sum()))
        boxes = []
        for k in range(len(labels)):
            ys, xs = np.nonzero(inst == k + 1)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        lab = np.array(labels, dtype=np.int64)
        images[i], instances[i] = img, inst
        semantic[i] = np.r_[0, lab].astype(np.uint8)[inst]
        all_boxes.append(np.array(boxes, dtype=np.float32).reshape(-1, 4))
        all_labels.append(lab)
        counts.append(len(labels))
    return (images.transpose(0, 3, 1, 2).copy(), semantic, instances, np.concatenate(all_boxes),
            np.concatenate(all_labels), np.array(counts, dtype=np.int64))


# ----------------------------------------------------------------------------------------------
# Pictures
# ----------------------------------------------------------------------------------------------


def draw(ax, image, boxes=None, labels=None, scores=None, colour: str = "lime", classes=CLASSES, fontsize: int = 7):
    """Show ``image`` (``[3, H, W]`` tensor, uint8 or in [0, 1]) on ``ax`` with its ``boxes [N, 4]``
    outlined and captioned with the class name (and score)."""
    import matplotlib.patches as patches

    img = image.detach().cpu()
    img = img.float() / 255 if not img.is_floating_point() else img
    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    ax.axis("off")
    if boxes is None:
        return ax
    for k, b in enumerate(check_boxes(boxes).tolist()):
        ax.add_patch(patches.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec=colour, lw=1.2))
        text = classes[int(labels[k])] if labels is not None else ""
        if scores is not None:
            text += f" {float(scores[k]):.2f}"
        if text:
            ax.text(b[0], b[1] - 1, text, color="black", fontsize=fontsize, va="bottom",
                    bbox=dict(facecolor=colour, alpha=0.8, pad=0.5, lw=0))
    return ax
