"""cvdl — the helper library of "Deep Learning for Computer Vision, beyond classification".

One module per concern, each small enough to read top to bottom:

- ``cvdl.device``  — pick CUDA / MPS / CPU in one call, seed everything in one call
- ``cvdl.config``  — smoke vs full mode (``CVDL_SMOKE``), where data and checkpoints live
- ``cvdl.data``    — dataset registry, verified cached downloads, local mirror, clear fallbacks
- ``cvdl.train``   — fit / evaluate with progress bars, history, AMP on GPU, checkpoints
- ``cvdl.plot``    — image grids, learning curves, feature maps, filters, confusion matrices
- ``cvdl.conv``    — convolution from scratch (checked against ``F.conv2d``)
- ``cvdl.arith``   — convolution arithmetic (Dumoulin & Visin), diagrams and an explorer
- ``cvdl.models``  — the CNNs the course builds (pattern builder, residual block)
- ``cvdl.viz``     — looking inside: saliency, guided backprop, occlusion, class models, top patches
- ``cvdl.art``      — inversion, DeepDream, Gram matrices, style transfer, random-feature networks
- ``cvdl.attacks``  — FGSM, the box-constrained attack, fooling images (MAP-Elites, gradient ascent)
- ``cvdl.zoo``     — networks to look inside: ImageNet weights when cached, course-trained CNNs otherwise
- ``cvdl.labcheck`` — lab checks: one ``check(...)`` declaration read by students, nbgrader and the grader
- ``cvdl.labs``     — labs/ generated from solutions/ (nbgrader format); splicing submissions
- ``cvdl.grade``    — ``cvdl grade``: sandboxed, resumable batch grading (docs/grading.md)
- ``cvdl.report``  — ``record(name, value)``: headline results that ``make run-all`` tabulates
"""
from .device import get_device, seed_everything, describe_device
from .config import is_smoke, is_ci
from .report import record, record_array

__version__ = "0.1.0"

_SUBMODULES = ("arith", "art", "attacks", "augment", "config", "conv", "data", "device", "grade", "labcheck",
               "labs", "models", "plot", "report", "train", "viz", "zoo")


def __getattr__(name):  # ``cvdl.plot`` etc. work without importing each submodule first
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
__all__ = ["get_device", "seed_everything", "describe_device", "is_smoke", "is_ci", "record", "record_array", "__version__"]
