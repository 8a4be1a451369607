"""Trusted reference implementations the lab checks compare against (``refs.conv2d``, ...).

A separate module so that the grader's sandbox can run without it: inside ``cvdl grade``'s
sandbox only ``labcheck`` and ``labrun`` of :mod:`cvdl.grading` exist, and ``labcheck.refs`` is a
placeholder whose every attribute raises (the harness never needs a reference; the expected
outputs were computed outside, when the grading key was built).
"""
from __future__ import annotations

import math

import numpy as np



class refs:
    """Reference implementations (PyTorch / NumPy) that lab checks compare against."""

    @staticmethod
    def correlate2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F
        x = torch.from_numpy(np.asarray(image, dtype=np.float64))[None, None]
        w = torch.from_numpy(np.asarray(kernel, dtype=np.float64))[None, None]
        return F.conv2d(x, w)[0, 0].numpy()

    @staticmethod
    def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: int = 1,
               padding: int = 0) -> np.ndarray:
        import torch
        import torch.nn.functional as F
        t = (lambda a: None if a is None else torch.from_numpy(np.asarray(a, dtype=np.float64)))
        return F.conv2d(t(x), t(w), t(b), stride=stride, padding=padding).numpy()

    @staticmethod
    def max_pool2d(x: np.ndarray, size: int, stride: int | None = None) -> np.ndarray:
        import torch
        import torch.nn.functional as F
        return F.max_pool2d(torch.from_numpy(np.asarray(x, dtype=np.float64)), size,
                            stride or size).numpy()

    @staticmethod
    def conv_transpose2d(x: np.ndarray, w: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
        import torch
        import torch.nn.functional as F
        t = (lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64)))
        return F.conv_transpose2d(t(x), t(w), stride=stride, padding=padding).numpy()

    @staticmethod
    def cross_entropy(logits, labels):
        import torch.nn.functional as F
        return F.cross_entropy(logits, labels)

    @staticmethod
    def rnn_step(x, h, w_xh, w_hh, b):
        import torch
        return torch.rnn_tanh_cell(x, h, w_xh, w_hh, b, torch.zeros_like(b))

    @staticmethod
    def lstm_cell(x, h, c, w_ih, w_hh, b):
        import torch
        return tuple(torch.lstm_cell(x, (h, c), w_ih, w_hh, b, torch.zeros_like(b)))

    @staticmethod
    def temperature_sample(logits, temperature, u):
        import torch
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        cdf = torch.softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, -1).cumsum(-1)
        return int(min(int((cdf <= u).sum()), len(cdf) - 1))

    @staticmethod
    def caption_loss(model, feats, caps, pad):
        import torch.nn.functional as F
        return F.cross_entropy(model(feats, caps[:, :-1]).transpose(1, 2), caps[:, 1:], ignore_index=pad)

    @staticmethod
    def greedy_decode(model, feats, bos, eos, max_len):
        from ..caption import greedy
        c = greedy(model, feats, bos, eos, max_len)[0]
        return c.ids, c.logprob

    @staticmethod
    def beam_search(model, feats, bos, eos, beam, max_len):
        from ..caption import beam_search
        c = beam_search(model, feats, bos, eos, beam=beam, max_len=max_len)[0]
        return c.ids, c.logprob

    @staticmethod
    def through_reversal(x, lambd, upstream):
        return x.clone(), -float(lambd) * upstream

    @staticmethod
    def dann_lambda(p, gamma=10.0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0

    @staticmethod
    def dann_step(model, optimizer, xs, ys, xt, lambd):
        from ..transfer import dann_step
        return dann_step(model, optimizer, xs, ys, xt, lambd)

    @staticmethod
    def domain_probe(source, target, seed=0):
        from ..transfer import domain_probe
        return domain_probe(source, target, seed)

    @staticmethod
    def box_iou(boxes1, boxes2):
        from ..detection import box_iou
        return box_iou(boxes1, boxes2)

    @staticmethod
    def nms(boxes, scores, iou_threshold):
        from torchvision.ops import nms
        return nms(boxes.float(), scores.float(), iou_threshold)

    @staticmethod
    def encode(proposals, targets):
        from ..detection import encode
        return encode(proposals, targets)

    @staticmethod
    def decode(proposals, deltas):
        from ..detection import decode
        return decode(proposals, deltas, clip=None)

    @staticmethod
    def average_precision(scores, tp, n_truth):
        from ..detection import average_precision
        return average_precision(scores, tp, n_truth)[0]

    @staticmethod
    def convolutionalise(model):
        from ..segment import convolutionalise
        return convolutionalise(model)

    @staticmethod
    def bilinear_kernel(factor):
        from ..segment import bilinear_kernel
        return bilinear_kernel(factor)

    @staticmethod
    def bilinear_upsampler(channels, factor):
        from ..segment import bilinear_upsampler
        return bilinear_upsampler(channels, factor)

    @staticmethod
    def double_conv(c_in, c_out):
        from ..segment import DoubleConv
        return DoubleConv(c_in, c_out)

    @staticmethod
    def up_block(x, skip, up, conv):
        import torch
        x = up(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh < 0 or dw < 0:
            raise ValueError("the skip map is smaller than the upsampled map")
        skip = skip[..., dh // 2:dh // 2 + x.shape[-2], dw // 2:dw // 2 + x.shape[-1]]
        return conv(torch.cat([skip, x], 1))

    @staticmethod
    def confusion_matrix(pred, truth, n_classes):
        from ..segment import confusion_matrix
        return confusion_matrix(pred, truth, n_classes)

    @staticmethod
    def iou_from_confusion(conf):
        from ..segment import iou_per_class
        iou = iou_per_class(conf)
        return iou, (float(np.nanmean(iou.numpy())) if not bool(iou.isnan().all()) else float("nan"))

    @staticmethod
    def cosine_matrix(a, b):
        from ..metric import cosine_matrix
        return cosine_matrix(a, b)

    @staticmethod
    def pair_loss(sim, same, margin=0.0):
        from ..metric import pair_loss
        return pair_loss(sim, same, margin)

    @staticmethod
    def cosine_triplet_loss(anchor, positive, negative, margin=0.2):
        import torch.nn as nn
        import torch.nn.functional as F
        loss = nn.TripletMarginWithDistanceLoss(distance_function=lambda x, y: 1 - F.cosine_similarity(x, y),
                                                margin=margin) if margin > 0 else None
        if loss is None:                 # PyTorch refuses margin 0; the same formula
            return F.relu(margin - F.cosine_similarity(anchor, positive) + F.cosine_similarity(anchor, negative)).mean()
        return loss(anchor, positive, negative)

    @staticmethod
    def semihard_negatives(sim, labels, anchors, positives):
        from ..metric import mine_negatives
        return mine_negatives(sim, labels, anchors, positives, "semihard")

    @staticmethod
    def recall_at_k(queries, query_labels, database, database_labels, k):
        from ..metric import recall_at_k
        return recall_at_k(queries, query_labels, database, database_labels, ks=(k,))[k]

    @staticmethod
    def hyperplane_codes(x, planes):
        from ..metric import HyperplaneLSH
        lsh = HyperplaneLSH(planes.shape[2], planes.shape[1], planes.shape[0])
        lsh.planes = planes.float()
        return lsh.codes(x)

    @staticmethod
    def lsh_candidates(query_codes, database_codes):
        import torch
        return torch.nonzero((database_codes == query_codes[None, :]).any(1)).flatten()

    @staticmethod
    def stack_frames(clips):
        from ..video import stack_frames
        return stack_frames(clips)

    @staticmethod
    def late_fusion(clips, tower, head):
        from ..video import late_fusion
        return late_fusion(clips, tower, head)

    @staticmethod
    def pooled_fusion(clips, tower, head):
        from ..video import pooled_fusion
        return pooled_fusion(clips, tower, head)

    @staticmethod
    def frame_differences(clips):
        from ..video import frame_differences
        return frame_differences(clips)

    @staticmethod
    def endpoint_error(flow, reference, mask=None):
        from ..video import endpoint_error
        return endpoint_error(flow, reference, mask)

    @staticmethod
    def lstm_clip_scores(clips, tower, lstm, head):
        from ..video import lstm_scores
        return lstm_scores(clips, tower, lstm, head)

    @staticmethod
    def corpus_bleu(hypotheses, references, n=4):
        from ..caption import bleu
        return bleu(hypotheses, references, n).score
