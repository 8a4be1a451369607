"""Video and action recognition (notebook 13): a moving-digits clip set whose labels need one
frame, motion, or temporal order; the fusion architectures of Karpathy et al.; optical flow and
the two-stream network; a CNN + LSTM over frames.

Conventions: a batch of clips is float ``[B, T, C, H, W]`` in [0, 1] (time before channels, as a
sequence of images); a flow field is ``[..., 2, H, W]`` holding (row, column) displacements in
pixels, ``flow[t]`` saying where each pixel of frame ``t`` is in frame ``t + 1``.

**The clips** (:func:`moving_digits`, after Srivastava et al.'s moving MNIST): one digit moving on
a ``size × size`` canvas that wraps around (a torus, as in the game Asteroids), ``speed`` pixels
per frame. Start positions are uniform on the torus, so the position in *every* frame is uniform
whatever the motion: a single frame carries no information about it, by construction.

- ``kind="straight"``: one direction for the whole clip. Labels: ``digit`` (any frame shows it) and
  ``direction`` (right / left / down / up: needs motion). Played backwards, a clip moving right is
  a clip moving left: the *set* of frames cannot tell the direction.
- ``kind="turn"``: the digit goes one way, then turns: the first leg across (right or left) and
  the second up or down, or the other way round. Label ``order``: which leg comes first. The
  turn comes after 2 … T − 3 steps (symmetric), so a clip played backwards is an equally likely
  clip of the other order: the set of frames — and the pair (first frame, last frame) — have the
  same distribution in both classes, and any model that ignores the order of frames is at chance.

Every from-scratch piece is checked in ``tests/test_video.py``: the clips against their own
construction (each frame the previous one shifted, the reversal symmetry, uniform positions),
early fusion against a 3-D convolution over the whole clip, the average-pooled model's
invariance to frame order and the LSTM's dependence on it, the flow estimate against the
generator's flow.

Sources: N. Srivastava, E. Mansimov, R. Salakhutdinov, *Unsupervised learning of video
representations using LSTMs*, ICML 2015 (moving MNIST); A. Karpathy et al., *Large-scale video
classification with convolutional neural networks*, CVPR 2014 (single-frame, early, late and slow
fusion); K. Simonyan, A. Zisserman, *Two-stream convolutional networks for action recognition in
videos*, NeurIPS 2014; J. Donahue et al., *Long-term recurrent convolutional networks for visual
recognition and description*, CVPR 2015 (LRCN).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks

__all__ = ["DIRECTIONS", "ORDERS", "ClipSet", "moving_digits", "true_flow", "optical_flow", "endpoint_error",
           "frame_differences", "check_clips", "per_frame", "stack_frames", "late_fusion", "pooled_fusion",
           "lstm_scores", "FrameTower", "SingleFrame", "LateFusion", "PooledFusion", "EarlyFusion", "SlowFusion",
           "CNNLSTM", "FlowStream", "fuse_scores", "FUSION_MODELS"]

DIRECTIONS = ("right", "left", "down", "up")
STEPS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}      # (row, column) per unit of speed
ORDERS = ("across first", "up/down first")
SPLIT_SEEDS = {"train": 1300, "test": 1301}
FLOW_VERSION = 1


# ----------------------------------------------------------------------------------------------
# The clips
# ----------------------------------------------------------------------------------------------


@dataclass
class ClipSet:
    """Clips and their labels. ``clips``: uint8 ``[N, T, 1, S, S]``; ``digit`` ``[N]``;
    ``direction`` ``[N]`` (index into :data:`DIRECTIONS`; for turning clips, the first leg's);
    ``order`` ``[N]`` (index into :data:`ORDERS`; −1 for straight clips); ``steps`` int
    ``[N, T − 1, 2]``: the (row, column) shift from each frame to the next; ``start`` int ``[N, 2]``:
    the digit box's top-left corner in frame 0; ``kind``, ``source``: how they were made."""

    clips: torch.Tensor
    digit: torch.Tensor
    direction: torch.Tensor
    order: torch.Tensor
    steps: torch.Tensor
    start: torch.Tensor
    kind: str
    source: str

    def __len__(self) -> int:
        return int(self.clips.shape[0])

    def __repr__(self) -> str:
        n, t, c, h, w = self.clips.shape
        return f"ClipSet({self.kind!r}, {n} clips of {t} frames {c}×{h}×{w}, source={self.source!r})"

    def float(self) -> torch.Tensor:
        """Clips as float32 in [0, 1]."""
        return self.clips.float().div_(255.0)

    def positions(self) -> torch.Tensor:
        """The digit box's top-left corner in every frame, on the torus → int ``[N, T, 2]``."""
        size = self.clips.shape[-1]
        path = torch.cat([self.start[:, None], self.start[:, None] + self.steps.cumsum(1)], 1)
        return path % size

    def combined(self) -> torch.Tensor:
        """The label that needs both appearance and motion: ``digit × 4 + direction`` (40 classes)."""
        return self.digit * len(DIRECTIONS) + self.direction


def _digit_sprites(split: str, n: int, digit_size: int):
    from . import data

    mn = data.load_mnist(split)
    idx = torch.arange(n) % len(mn)
    sprites = F.interpolate(mn.images[idx].float(), size=(digit_size, digit_size), mode="area")
    return sprites.round().clamp(0, 255).to(torch.uint8), mn.labels[idx].clone(), mn


def moving_digits(split: str = "train", n: int = 1000, kind: str = "straight", frames: int = 8, size: int = 32,
                  digit_size: int = 16, speeds=(1, 2), seed: int | None = None) -> ClipSet:
    """``n`` clips of one MNIST digit (from ``split``, shrunk to ``digit_size``) moving on a
    ``size × size`` torus for ``frames`` frames at a speed drawn from ``speeds`` (pixels per frame).
    ``kind``: ``"straight"`` or ``"turn"`` (see the module's notes). Deterministic: the split's seed
    (or ``seed``) fixes every draw. Without MNIST the digits come from scikit-learn's (the
    ``source`` says so)."""
    _checks.positive_int(n=n, frames=frames, size=size, digit_size=digit_size)
    if kind not in ("straight", "turn"):
        raise ValueError(f"kind must be 'straight' or 'turn', got {kind!r}")
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    if digit_size > size:
        raise ValueError(f"digit_size ({digit_size}) must fit the canvas (size {size})")
    speeds = tuple(speeds)
    if not speeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in speeds):
        raise ValueError(f"speeds must be positive integers, got {speeds!r}")
    if kind == "turn" and frames < 6:
        raise ValueError(f"turning clips need at least 6 frames (a turn after 2 … T − 3 steps), got {frames}")
    longest = frames - 1 if kind == "straight" else frames - 3           # steps in one straight leg
    if max(speeds) * longest >= size / 2:
        raise ValueError(f"a digit must travel less than half the canvas (size {size}) in a straight line, "
                         f"or the wrap-around makes its motion ambiguous; {longest} steps at speed {max(speeds)} "
                         f"go too far")
    g = torch.Generator().manual_seed(SPLIT_SEEDS[split] + 17 * (kind == "turn") if seed is None else seed)
    sprites, digit, mn = _digit_sprites(split, n, digit_size)
    perm = torch.randperm(n, generator=g)                 # which digit goes in which clip
    sprites, digit = sprites[perm], digit[perm]
    start = torch.randint(0, size, (n, 2), generator=g)
    speed = torch.tensor(speeds)[torch.randint(len(speeds), (n,), generator=g)]
    unit = torch.tensor([STEPS[d] for d in DIRECTIONS])                        # [4, 2]
    steps = torch.zeros(n, frames - 1, 2, dtype=torch.long)
    order = torch.full((n,), -1, dtype=torch.long)
    if kind == "straight":
        direction = torch.randint(4, (n,), generator=g)
        steps[:] = (unit[direction] * speed[:, None])[:, None]
    else:
        across = torch.randint(2, (n,), generator=g)                            # right / left
        updown = 2 + torch.randint(2, (n,), generator=g)                        # down / up
        order = torch.randint(2, (n,), generator=g)
        turn = torch.randint(2, frames - 2, (n,), generator=g)                  # steps before the turn: 2 … T − 3
        first = torch.where(order == 0, across, updown)
        second = torch.where(order == 0, updown, across)
        direction = first
        t = torch.arange(frames - 1)[None]
        leg = torch.where((t < turn[:, None])[..., None], unit[first][:, None], unit[second][:, None])
        steps = leg * speed[:, None, None]
    canvas = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    canvas[:, :, :digit_size, :digit_size] = sprites
    clips = torch.empty(n, frames, 1, size, size, dtype=torch.uint8)
    pos = torch.cat([start[:, None], start[:, None] + steps.cumsum(1)], 1) % size       # [n, T, 2]
    for i in range(n):
        for f in range(frames):
            clips[i, f] = torch.roll(canvas[i], shifts=(int(pos[i, f, 0]), int(pos[i, f, 1])), dims=(1, 2))
    source = f"generated from {mn.name} ({mn.source})"
    return ClipSet(clips, digit, direction, order, steps, start, kind, source)


def true_flow(clipset: ClipSet, threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's optical flow → ``(flow, mask)``: ``flow`` float ``[N, T − 1, 2, S, S]`` is the
    step from frame ``t`` to ``t + 1`` on the digit's pixels of frame ``t`` (where the frame is
    brighter than ``threshold`` × 255) and 0 on the still background; ``mask`` bool
    ``[N, T − 1, S, S]`` marks those pixels."""
    x = clipset.clips[:, :-1, 0].float()
    mask = x > threshold * 255
    flow = clipset.steps.float()[..., None, None] * mask[:, :, None]
    return flow, mask


def check_clips(x, frames: int | None = None, name: str = "clips") -> torch.Tensor:
    """``x`` must be a clip batch ``[B, T, C, H, W]`` (any dtype) with T ≥ 1 (and T = ``frames``
    when given); returns it. A zero-length clip is an error, not an empty answer."""
    t = _checks.tensor(x, name)
    if t.ndim != 5:
        raise ValueError(f"{name} must be [B, T, C, H, W] clips, got shape {tuple(t.shape)}")
    if t.shape[1] == 0:
        raise ValueError(f"{name} has zero frames (shape {tuple(t.shape)}): a clip needs at least one")
    if frames is not None and t.shape[1] != frames:
        what = f"{frames} flow fields per clip" if name == "flow" else f"clips of {frames} frames"
        raise ValueError(f"this model was built for {what}, got {t.shape[1]} (shape {tuple(t.shape)})")
    return t


def frame_differences(x) -> torch.Tensor:
    """``x[:, t + 1] − x[:, t]`` → ``[B, T − 1, C, H, W]``: the cheapest motion signal (non-zero only
    where something changed). Needs T ≥ 2."""
    x = check_clips(x)
    if x.shape[1] < 2:
        raise ValueError(f"frame differences need at least 2 frames, got {x.shape[1]}")
    return x[:, 1:] - x[:, :-1]


# ----------------------------------------------------------------------------------------------
# Optical flow (scikit-image), cached
# ----------------------------------------------------------------------------------------------


def _flow_cache_path(clips: torch.Tensor, method: str, radius: int, num_warp: int):
    from . import config

    h = hashlib.sha256(np.ascontiguousarray(clips.numpy()).tobytes()).hexdigest()[:16]
    return config.cache_dir() / "generated" / f"flow-v{FLOW_VERSION}-{method}-r{radius}-w{num_warp}-{h}.npy"


def optical_flow(clips, method: str = "ilk", radius: int = 4, num_warp: int = 3, cache: bool = True,
                 progress: bool = True) -> torch.Tensor:
    """Optical flow between consecutive frames with scikit-image (``"ilk"``: iterative
    Lucas–Kanade, ``optical_flow_ilk(radius=radius, num_warp=num_warp)``; ``"tvl1"``: TV-L1,
    ``optical_flow_tvl1(num_warp=num_warp)``, ``radius`` unused; scikit-image's defaults are 10
    warps for Lucas–Kanade and 5 for TV-L1 — for Lucas–Kanade on these clips 3 warps cost about a
    quarter of 10 and are as close on the strokes: notebook 13 measures and asserts it)
    → float ``[N, T − 1, 2, H, W]``, (row, column) per pixel of frame ``t`` pointing to frame
    ``t + 1`` — the convention of :func:`true_flow`. ``clips``: uint8 or float ``[N, T, 1, H, W]``
    (grey). Cached in the course's cache (``generated/``), keyed by the clips' bytes and the method."""
    from skimage.registration import optical_flow_ilk, optical_flow_tvl1

    if method not in ("ilk", "tvl1"):
        raise ValueError(f"method must be 'ilk' or 'tvl1', got {method!r}")
    _checks.positive_int(radius=radius, num_warp=num_warp)
    clips = check_clips(clips).cpu()
    if clips.shape[2] != 1:
        raise ValueError(f"optical flow here takes grey clips [N, T, 1, H, W], got {clips.shape[2]} channels")
    if clips.shape[1] < 2:
        raise ValueError(f"optical flow needs at least 2 frames, got {clips.shape[1]}")
    path = _flow_cache_path(clips, method, radius, num_warp) if cache else None
    if path is not None and path.exists():
        flow = np.load(path, allow_pickle=False)
        if flow.shape == (clips.shape[0], clips.shape[1] - 1, 2, *clips.shape[-2:]):
            return torch.from_numpy(flow)
    frames = clips[:, :, 0].numpy().astype(np.float32)
    if clips.dtype == torch.uint8:
        frames /= 255.0
    from tqdm.auto import tqdm

    from .config import is_ci

    n, t = frames.shape[:2]
    out = np.zeros((n, t - 1, 2, *frames.shape[-2:]), dtype=np.float32)
    for i in tqdm(range(n), desc=f"optical flow ({method})", unit="clip", disable=not progress or is_ci()):
        for f in range(t - 1):
            # scikit-image returns the flow u with reference(x) ≈ moving(x + u): with reference =
            # frame t and moving = frame t + 1, u says where frame t's pixel went
            if method == "ilk":
                out[i, f] = optical_flow_ilk(frames[i, f], frames[i, f + 1], radius=radius, num_warp=num_warp)
            else:
                out[i, f] = optical_flow_tvl1(frames[i, f], frames[i, f + 1], num_warp=num_warp)
    if path is not None:
        from ._io import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, out)
    return torch.from_numpy(out)


def endpoint_error(flow, reference, mask=None) -> float:
    """Mean endpoint error ‖flow − reference‖ (pixels) over the pixels where ``mask`` is True (all
    pixels by default). ``flow``, ``reference``: ``[..., 2, H, W]``; ``mask``: ``[..., H, W]``."""
    flow, reference = _checks.tensor(flow, "flow"), _checks.tensor(reference, "reference")
    if flow.shape != reference.shape or flow.ndim < 3 or flow.shape[-3] != 2:
        raise ValueError(f"flow and reference must both be [..., 2, H, W], got {tuple(flow.shape)} "
                         f"and {tuple(reference.shape)}")
    err = (flow.float() - reference.float()).pow(2).sum(-3).sqrt()
    if mask is None:
        return float(err.mean())
    mask = _checks.tensor(mask, "mask").bool()
    if mask.shape != err.shape:
        raise ValueError(f"mask must be {tuple(err.shape)}, got {tuple(mask.shape)}")
    if not mask.any():
        raise ValueError("mask selects no pixel")
    return float(err[mask].mean())


# ----------------------------------------------------------------------------------------------
# The fusion models (Karpathy et al.) and LRCN
# ----------------------------------------------------------------------------------------------


class FrameTower(nn.Module):
    """The per-frame CNN every model shares: three blocks of 3×3 convolution (circular padding — the
    canvas wraps), ReLU and 2× max-pooling (16, 32, 32 channels), then a fully connected layer to
    ``features`` numbers (linear: a ReLU there let whole runs die, every feature stuck at 0) from
    two summaries of the last map: its maximum over all positions (what is there, wherever it is)
    and the whole map flattened (where it is — late fusion compares two frames' positions).
    ``[B, in_channels, S, S]`` → ``[B, features]``."""

    def __init__(self, in_channels: int = 1, features: int = 64, size: int = 32, width: int = 16):
        super().__init__()
        _checks.positive_int(in_channels=in_channels, features=features, size=size, width=width)
        if size % 8:
            raise ValueError(f"size must be a multiple of 8 (three 2× poolings), got {size}")
        self.in_channels, self.features, self.size = in_channels, features, size
        conv = lambda i, o: nn.Conv2d(i, o, 3, padding=1, padding_mode="circular")   # noqa: E731
        self.body = nn.Sequential(conv(in_channels, width), nn.ReLU(), nn.MaxPool2d(2),
                                  conv(width, 2 * width), nn.ReLU(), nn.MaxPool2d(2),
                                  conv(2 * width, 2 * width), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(2 * width * ((size // 8) ** 2 + 1), features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"this tower takes [B, {self.in_channels}, {self.size}, {self.size}] frames, "
                             f"got shape {tuple(x.shape)}")
        m = self.body(x)
        return self.fc(torch.cat([m.amax((2, 3)), m.flatten(1)], 1))


def per_frame(x, tower: nn.Module) -> torch.Tensor:
    """``tower`` applied to every frame of clips ``x`` ``[B, T, C, H, W]`` in one batch → ``[B, T, F]``."""
    x = check_clips(x)
    b, t = x.shape[:2]
    return tower(x.flatten(0, 1)).unflatten(0, (b, t))


def stack_frames(x) -> torch.Tensor:
    """Early fusion's input: the frames of ``x`` ``[B, T, C, H, W]`` stacked as channels →
    ``[B, T · C, H, W]`` (frame t's channels at t · C … t · C + C − 1)."""
    return check_clips(x).flatten(1, 2)


def late_fusion(x, tower: nn.Module, head: nn.Module) -> torch.Tensor:
    """Late fusion of the first and the last frame: ``head(cat(tower(x[:, 0]), tower(x[:, −1])))``."""
    x = check_clips(x)
    return head(torch.cat([tower(x[:, 0]), tower(x[:, -1])], 1))


def pooled_fusion(x, tower: nn.Module, head: nn.Module) -> torch.Tensor:
    """Late fusion of every frame by averaging: ``head(mean over t of tower(x[:, t]))`` — the same
    for any order of the frames."""
    return head(per_frame(x, tower).mean(1))


def lstm_scores(x, tower: nn.Module, lstm: nn.LSTM, head: nn.Module) -> torch.Tensor:
    """LRCN: ``tower`` on every frame, the ``lstm`` (``batch_first``) over the frames' features,
    ``head`` on the output after the last frame."""
    out, _ = lstm(per_frame(x, tower))
    return head(out[:, -1])


class SingleFrame(nn.Module):
    """Classify one frame (default the middle one, ``T // 2``) and ignore the rest."""

    def __init__(self, classes: int, frame: int | None = None, features: int = 64, size: int = 32):
        super().__init__()
        self.frame = frame
        self.tower = FrameTower(1, features, size)
        self.head = nn.Linear(features, classes)

    def forward(self, x):
        x = check_clips(x)
        t = x.shape[1] // 2 if self.frame is None else self.frame
        return self.head(self.tower(x[:, t]))


class LateFusion(nn.Module):
    """Karpathy's late fusion: one tower (shared weights) on the first and on the last frame, the two
    feature vectors concatenated and merged by fully connected layers — motion is seen only there,
    as a difference between two far-apart frames."""

    def __init__(self, classes: int, features: int = 64, size: int = 32):
        super().__init__()
        self.tower = FrameTower(1, features, size)
        self.head = nn.Sequential(nn.Linear(2 * features, features), nn.ReLU(), nn.Linear(features, classes))

    def forward(self, x):
        return late_fusion(x, self.tower, self.head)


class PooledFusion(nn.Module):
    """Late fusion over every frame by averaging: the tower on each frame, the features averaged over
    time, then the head. The average does not depend on the frames' order — this model cannot
    tell a clip from the same clip played backwards, whatever it learns."""

    def __init__(self, classes: int, features: int = 64, size: int = 32):
        super().__init__()
        self.tower = FrameTower(1, features, size)
        self.head = nn.Sequential(nn.Linear(features, features), nn.ReLU(), nn.Linear(features, classes))

    def forward(self, x):
        return pooled_fusion(x, self.tower, self.head)


class EarlyFusion(nn.Module):
    """Karpathy's early fusion: the ``frames`` frames stacked as channels, so the first convolution's
    filters span the whole clip in time (a 3-D convolution whose temporal extent is T: checked in
    the tests); the rest is the 2-D tower. Built for one clip length."""

    def __init__(self, classes: int, frames: int, channels: int = 1, features: int = 64, size: int = 32):
        super().__init__()
        _checks.positive_int(frames=frames, channels=channels)
        self.frames = frames
        self.tower = FrameTower(frames * channels, features, size)
        self.head = nn.Linear(features, classes)

    def forward(self, x):
        return self.head(self.tower(stack_frames(check_clips(x, self.frames))))


def _time_padding(t: int, k: int, stride: int) -> int:
    """Zero frames to add at the end so that a temporal kernel ``k`` with ``stride`` covers all ``t``."""
    return max(k - t, 0) + (-(max(t, k) - k)) % stride


class SlowFusion(nn.Module):
    """Karpathy's slow fusion: 3-D convolutions whose temporal reach grows layer by layer (time
    kernel 4 with stride 2, then 2 with stride 2, then what is left), so higher layers see more of
    the clip, in space and in time; zero frames are added at the end where a stride would leave
    the last frames out. ``[B, T, 1, S, S]`` → scores; T ≥ 4."""

    def __init__(self, classes: int, frames: int = 8, features: int = 64, size: int = 32, width: int = 16):
        super().__init__()
        _checks.positive_int(frames=frames)
        if frames < 4:
            raise ValueError(f"slow fusion needs at least 4 frames, got {frames}")
        if size % 8:
            raise ValueError(f"size must be a multiple of 8 (three 2× poolings), got {size}")
        self.frames, self.size = frames, size
        self.pads = [_time_padding(frames, 4, 2)]
        t1 = (frames + self.pads[0] - 4) // 2 + 1
        self.pads.append(_time_padding(t1, 2, 2))
        t2 = (t1 + self.pads[1] - 2) // 2 + 1
        self.pads.append(0)
        conv = lambda i, o, kt, st: nn.Conv3d(i, o, (kt, 3, 3), stride=(st, 1, 1), padding=(0, 1, 1),   # noqa: E731
                                              padding_mode="circular")
        self.convs = nn.ModuleList([conv(1, width, 4, 2), conv(width, 2 * width, 2, 2),
                                    conv(2 * width, 2 * width, t2, 1)])
        self.fc = nn.Linear(2 * width * ((size // 8) ** 2 + 1), features)      # the tower's two summaries
        self.head = nn.Linear(features, classes)

    def forward(self, x):
        x = check_clips(x, self.frames)
        if x.shape[2] != 1 or x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"slow fusion takes [B, {self.frames}, 1, {self.size}, {self.size}] clips, "
                             f"got shape {tuple(x.shape)}")
        m = x.transpose(1, 2)                                         # Conv3d wants [B, C, T, H, W]
        for conv, pad in zip(self.convs, self.pads):
            if pad:
                m = F.pad(m, (0, 0, 0, 0, 0, pad))
            m = F.max_pool3d(F.relu(conv(m)), (1, 2, 2))
        m = m.squeeze(2)                                              # time is 1 at the end
        return self.head(self.fc(torch.cat([m.amax((2, 3)), m.flatten(1)], 1)))


class CNNLSTM(nn.Module):
    """LRCN (Donahue et al.): the tower on every frame, an LSTM over the frames' features, the
    class read from the last hidden state. Any clip length ≥ 1, and the order of frames matters."""

    def __init__(self, classes: int, features: int = 64, hidden: int = 64, size: int = 32, in_channels: int = 1):
        super().__init__()
        self.tower = FrameTower(in_channels, features, size)
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return lstm_scores(x, self.tower, self.lstm, self.head)


class FlowStream(nn.Module):
    """The two-stream network's temporal stream: the T − 1 flow fields (2 channels each) stacked as
    input channels of the tower (Simonyan & Zisserman's stacked flow). ``[B, T − 1, 2, S, S]`` →
    scores."""

    def __init__(self, classes: int, flows: int, features: int = 64, size: int = 32):
        super().__init__()
        _checks.positive_int(flows=flows)
        self.flows = flows
        self.tower = FrameTower(2 * flows, features, size)
        self.head = nn.Linear(features, classes)

    def forward(self, x):
        x = check_clips(x, self.flows, "flow")
        if x.shape[2] != 2:
            raise ValueError(f"flow must have 2 channels (row, column), got {x.shape[2]}")
        return self.head(self.tower(stack_frames(x)))


def fuse_scores(*scores: torch.Tensor) -> torch.Tensor:
    """Two-stream fusion by averaging: the mean of each stream's softmax probabilities → ``[B, K]``."""
    if not scores:
        raise ValueError("fuse_scores needs at least one set of scores")
    shape = scores[0].shape
    if any(s.shape != shape for s in scores) or len(shape) != 2:
        raise ValueError(f"every stream's scores must be the same [B, K], got {[tuple(s.shape) for s in scores]}")
    return torch.stack([F.softmax(s.float(), 1) for s in scores]).mean(0)


# name → constructor(classes, frames): the table notebook 13 trains
FUSION_MODELS = {
    "single frame": lambda k, t: SingleFrame(k),
    "late fusion (first + last)": lambda k, t: LateFusion(k),
    "late fusion (average of all)": lambda k, t: PooledFusion(k),
    "early fusion": lambda k, t: EarlyFusion(k, t),
    "slow fusion": lambda k, t: SlowFusion(k, t),
    "CNN + LSTM": lambda k, t: CNNLSTM(k),
}
