"""cvdl — the helper library of "Deep Learning for Computer Vision, beyond classification".

One module per concern, each small enough to read top to bottom:

- ``cvdl.device``  — pick CUDA / MPS / CPU in one call, seed everything in one call
- ``cvdl.config``  — smoke vs full mode (``CVDL_SMOKE``), where data and checkpoints live
- ``cvdl.data``    — datasets and photos as tensors, with clear fallbacks when offline
- ``cvdl.train``   — the training loop (``train_one_epoch``, ``fit``, ``evaluate``), metrics, checkpoints
- ``cvdl.plot``    — image grids, mosaics, learning curves, feature maps, filters, confusion matrices
- ``cvdl.report``  — ``record(name, value)``: headline results that ``make run-all`` tabulates

Lecture topics, one module each:

- ``cvdl.conv``    — convolution from scratch (checked against ``F.conv2d``)
- ``cvdl.arith``   — convolution arithmetic (Dumoulin & Visin); ``cvdl.arith_figures`` draws it
- ``cvdl.models``  — the CNNs the course builds (pattern builder, residual block, input normalisation)
- ``cvdl.augment`` — batch augmentation on the device (pad-and-crop, affine warps)
- ``cvdl.viz``     — looking inside: saliency, guided backprop, occlusion, class models, top patches
- ``cvdl.art``     — inversion, DeepDream, Gram matrices, style transfer, random-feature networks
- ``cvdl.attacks`` — FGSM, the box-constrained attack, fooling images (MAP-Elites, gradient ascent)
- ``cvdl.seq``     — RNNs and LSTMs step by step, vanishing gradients, language models and sampling
- ``cvdl.caption`` — Show and Tell on a generated scene set, greedy and beam search, BLEU, retrieval
- ``cvdl.transfer`` — MNIST-M, the gradient-reversal layer and DANN, domain probes, multi-task weights
- ``cvdl.detection`` — boxes and IoU, selective search, R-CNN's offsets, NMS, AP, the generated canvases
- ``cvdl.segment`` — mean IoU from the confusion matrix, edge bands, convolutionalisation, bilinear upsampling,
  FCN, U-Net, colourisation over ab bins (Zhang et al.)
- ``cvdl.metric``  — cosine embeddings, pair and triplet losses, negatives mined in a batch, recall@K, exact
  k-NN and random-hyperplane LSH, an identity set made of MNIST renderings
- ``cvdl.video``   — moving digits with labels that need one frame / motion / order, single-frame, late,
  early and slow fusion, optical flow (scikit-image) and two streams, a CNN + LSTM over frames
- ``cvdl.zoo``     — networks to look inside: ImageNet weights when cached, course-trained CNNs otherwise

The instructor's machinery (lab checks, lab generation, sandboxed grading, the ``cvdl`` command)
lives apart, in ``cvdl.grading``. Private modules: ``cvdl._fetch`` (the dataset registry,
verified downloads, the local mirror), ``cvdl._checks`` (argument checks), ``cvdl._io`` (atomic
file writes).
"""
from .config import is_smoke, is_ci
from .report import record, record_array

__version__ = "0.1.0"

_SUBMODULES = ("arith", "arith_figures", "art", "attacks", "augment", "caption", "config", "conv", "data", "detection", "device",
               "grading", "metric", "models", "plot", "report", "segment", "seq", "train", "transfer", "video", "viz", "zoo")


_LAZY = {"get_device": "device", "seed_everything": "device", "describe_device": "device"}


def __getattr__(name):  # ``cvdl.plot`` etc. work without importing each submodule first; ``import cvdl``
    if name in _LAZY:      # itself does not import torch (the ``cvdl`` command starts in a fraction of a second)
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
__all__ = ["get_device", "seed_everything", "describe_device", "is_smoke", "is_ci", "record", "record_array", "__version__"]
