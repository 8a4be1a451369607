"""cvdl.video: the moving-digits clips against their own construction (frames shifted step by
step, positions uniform whatever the motion, the reversal symmetry that puts order-blind models
at chance), the flow estimate against the generator's flow, early fusion against a 3-D
convolution over the whole clip, the average-pooled model's invariance to frame order and the
LSTM's dependence on it, and the errors for clips of the wrong length."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chi2_contingency

from cvdl import video

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def straight():
    return video.moving_digits("train", 2000, "straight")


@pytest.fixture(scope="module")
def turn():
    return video.moving_digits("train", 2000, "turn")


def test_each_frame_is_the_previous_one_shifted(straight, turn):
    for s in (straight, turn):
        c = s.clips[:200]
        for t in range(c.shape[1] - 1):
            for i in range(200):
                dy, dx = (int(v) for v in s.steps[i, t])
                assert torch.equal(c[i, t + 1], torch.roll(c[i, t], (dy, dx), dims=(1, 2)))
    # frame 0 rolled back by the start is the digit in the top-left box, nothing elsewhere
    back = torch.stack([torch.roll(straight.clips[i, 0], tuple(-int(v) for v in straight.start[i]), dims=(1, 2))
                        for i in range(50)])
    assert back[:, :, :16, :16].sum() > 0 and back[:, :, 16:].sum() == 0 and back[:, :, :, 16:].sum() == 0
    p = straight.positions()
    assert p.shape == (2000, 8, 2) and torch.equal(p[:, 0], straight.start % 32)


def test_labels_match_the_steps(straight, turn):
    unit = torch.tensor([video.STEPS[d] for d in video.DIRECTIONS])
    speed = straight.steps[:, 0].abs().sum(1)
    assert set(speed.tolist()) == {1, 2}
    assert torch.equal(straight.steps, (unit[straight.direction] * speed[:, None])[:, None].expand(-1, 7, -1))
    assert (straight.order == -1).all() and set(straight.digit.tolist()) == set(range(10))
    # turning clips: a horizontal leg then a vertical one (order 0) or the reverse, turning after 2 … 5 steps
    horizontal = turn.steps[..., 1] != 0
    assert torch.equal(horizontal ^ (turn.steps[..., 0] != 0), torch.ones_like(horizontal))   # one axis per step
    turns = (horizontal[:, 1:] != horizontal[:, :-1]).sum(1)
    assert (turns == 1).all()
    first_len = (horizontal == horizontal[:, :1]).int().argmin(1)
    assert set(first_len.tolist()) == {2, 3, 4, 5}
    assert torch.equal(turn.order, (~horizontal[:, 0]).long())
    name = {(0, 1): "right", (0, -1): "left", (1, 0): "down", (-1, 0): "up"}
    first = [video.DIRECTIONS.index(name[tuple(int(v) for v in turn.steps[i, 0].sign())]) for i in range(len(turn))]
    assert turn.direction.tolist() == first, "a turning clip's direction is its first leg's"


def test_straight_combined_label(straight):
    assert torch.equal(straight.combined(), straight.digit * 4 + straight.direction)
    assert straight.combined().max() < 40


def test_a_single_frame_says_nothing_about_the_motion(straight, turn):
    # the digit's position in any frame is independent of the label (start uniform on the torus):
    # chi-square on quadrant × label, for the first, middle and last frames
    for s, label in ((straight, straight.direction), (turn, turn.order)):
        p = s.positions()
        for t in (0, 4, 7):
            quadrant = (p[:, t, 0] // 16) * 2 + p[:, t, 1] // 16
            table = np.zeros((4, int(label.max()) + 1))
            np.add.at(table, (quadrant.numpy(), label.numpy()), 1)
            assert chi2_contingency(table).pvalue > 1e-3


def test_reversal_turns_one_order_into_the_other(turn):
    # played backwards, a clip's steps are its steps reversed and negated: the legs swap, so the order flips
    rev = -turn.steps.flip(1)
    assert torch.equal((rev[:, 0, 1] == 0).long(), 1 - turn.order)
    # and the pair (first frame, last frame) has the same distribution in both classes: the total
    # displacement (and the start, uniform) has the same law whichever leg comes first
    disp = turn.steps.sum(1)
    keys = sorted({tuple(v) for v in disp.abs().tolist()})
    table = np.zeros((len(keys), 2))
    for d, o in zip(disp.abs().tolist(), turn.order.tolist()):
        table[keys.index(tuple(d)), o] += 1
    assert chi2_contingency(table).pvalue > 1e-3


def test_deterministic_and_checked_arguments():
    a, b = video.moving_digits("test", 30, "turn"), video.moving_digits("test", 30, "turn")
    assert torch.equal(a.clips, b.clips) and torch.equal(a.order, b.order)
    c = video.moving_digits("test", 30, "straight")
    assert not torch.equal(a.clips, c.clips)
    with pytest.raises(ValueError, match="kind"):
        video.moving_digits(kind="diagonal")
    with pytest.raises(ValueError, match="split"):
        video.moving_digits("val")
    with pytest.raises(ValueError, match="half the canvas"):
        video.moving_digits(n=4, speeds=(3,))
    with pytest.raises(ValueError, match="fit the canvas"):
        video.moving_digits(n=4, digit_size=40)
    with pytest.raises(ValueError, match="at least 6 frames"):
        video.moving_digits(n=4, kind="turn", frames=5)
    with pytest.raises(ValueError, match="speeds"):
        video.moving_digits(n=4, speeds=())


def test_true_flow_moves_frame_t_onto_frame_t_plus_1(straight):
    flow, mask = video.true_flow(video.moving_digits("test", 20, "turn"))
    s = video.moving_digits("test", 20, "turn")
    assert flow.shape == (20, 7, 2, 32, 32) and mask.shape == (20, 7, 32, 32)
    assert (flow[~mask[:, :, None].expand_as(flow)] == 0).all()
    for i in range(20):
        for t in range(7):
            ys, xs = torch.nonzero(mask[i, t], as_tuple=True)
            dy, dx = flow[i, t, 0, ys, xs].long(), flow[i, t, 1, ys, xs].long()
            assert torch.equal(s.clips[i, t + 1, 0, (ys + dy) % 32, (xs + dx) % 32], s.clips[i, t, 0, ys, xs])


def test_optical_flow_recovers_the_generators_flow(tmp_path, monkeypatch):
    s = video.moving_digits("test", 12, "straight")
    monkeypatch.setenv("CVDL_CACHE", str(tmp_path))
    est = video.optical_flow(s.clips, progress=False)
    flow, _ = video.true_flow(s)
    _, core = video.true_flow(s, threshold=0.5)            # the digit's bright strokes
    assert est.shape == flow.shape
    err = video.endpoint_error(est, flow, core)
    assert err < 0.5, f"Lucas–Kanade is off by {err:.2f} px on the digit"
    # the sign convention: the mean flow on the strokes points along the step
    mean = (est * core[:, :, None]).sum((-1, -2)) / core[:, :, None].sum((-1, -2))
    step = s.steps.float()
    assert ((mean * step).sum(-1) > 0).all(), "every estimate points the way the digit went"
    assert ((mean - step).norm(dim=-1) < 0.5).double().mean() > 0.95
    assert len(list(tmp_path.glob("generated/flow-*.npy"))) == 1
    again = video.optical_flow(s.clips, progress=False)      # from the cache
    assert torch.equal(again, est)
    with pytest.raises(ValueError, match="at least 2 frames"):
        video.optical_flow(s.clips[:, :1])
    with pytest.raises(ValueError, match="method"):
        video.optical_flow(s.clips, method="farneback")


def test_endpoint_error_by_hand():
    a = torch.zeros(1, 2, 2, 2)
    b = a.clone()
    b[0, 0, 0, 0], b[0, 1, 0, 0] = 3.0, 4.0               # one pixel off by (3, 4): 5 px
    assert video.endpoint_error(b, a) == pytest.approx(5 / 4)
    m = torch.zeros(1, 2, 2, dtype=torch.bool)
    m[0, 0, 0] = True
    assert video.endpoint_error(b, a, m) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="no pixel"):
        video.endpoint_error(b, a, torch.zeros_like(m))
    with pytest.raises(ValueError, match=r"\[..., 2, H, W\]"):
        video.endpoint_error(b, a[:, :1])


def test_frame_differences():
    x = torch.rand(2, 5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    d = video.frame_differences(x)
    assert torch.equal(d, torch.stack([x[:, t + 1] - x[:, t] for t in range(4)], 1))
    with pytest.raises(ValueError, match="at least 2 frames"):
        video.frame_differences(x[:, :1])


def test_early_fusion_is_a_3d_convolution_spanning_the_clip():
    torch.manual_seed(0)
    m = video.EarlyFusion(4, frames=8)
    conv2d = m.tower.body[0]
    x = torch.rand(3, 8, 1, 32, 32)
    want = conv2d(x.flatten(1, 2))
    w3 = conv2d.weight.reshape(16, 8, 1, 3, 3).transpose(1, 2)              # [out, C, T, 3, 3]
    padded = F.pad(x.transpose(1, 2), (1, 1, 1, 1, 0, 0), mode="circular")  # [B, C, T, H+2, W+2]
    got = F.conv3d(padded, w3, conv2d.bias).squeeze(2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_pooled_fusion_ignores_frame_order_and_the_lstm_does_not():
    torch.manual_seed(0)
    x = torch.rand(4, 8, 1, 32, 32)
    perm = torch.tensor([3, 0, 6, 1, 7, 2, 5, 4])
    pooled, lstm, late = video.PooledFusion(2).eval(), video.CNNLSTM(2).eval(), video.LateFusion(2).eval()
    with torch.no_grad():
        torch.testing.assert_close(pooled(x[:, perm]), pooled(x), atol=1e-5, rtol=1e-5)
        assert (lstm(x[:, perm]) - lstm(x)).abs().max() > 1e-4
        assert (late(x.flip(1)) - late(x)).abs().max() > 1e-4        # first and last swapped
        single = video.SingleFrame(2).eval()
        y = x.clone()
        y[:, :4], y[:, 5:] = torch.rand(4, 4, 1, 32, 32), torch.rand(4, 3, 1, 32, 32)
        torch.testing.assert_close(single(y), single(x))              # only the middle frame counts
        assert lstm(x[:, :3]).shape == (4, 2) and lstm(x[:, :1]).shape == (4, 2)   # any length


def test_slow_fusion_reaches_every_frame():
    for t in (4, 5, 6, 7, 8, 9, 10, 16):
        torch.manual_seed(0)
        m = video.SlowFusion(3, frames=t)
        x = torch.rand(2, t, 1, 32, 32, requires_grad=True)
        m(x).sum().backward()
        reach = x.grad.abs().sum((0, 2, 3, 4))
        assert (reach > 0).all(), f"T={t}: frames {torch.nonzero(reach == 0).flatten().tolist()} unseen"
    with pytest.raises(ValueError, match="at least 4 frames"):
        video.SlowFusion(3, frames=3)


@pytest.mark.parametrize("name", list(video.FUSION_MODELS))
def test_zero_length_and_wrong_length_clips_are_clear_errors(name):
    m = video.FUSION_MODELS[name](3, 8)
    assert m(torch.rand(2, 8, 1, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="zero frames"):
        m(torch.rand(2, 0, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        m(torch.rand(2, 1, 32, 32))
    if name in ("early fusion", "slow fusion"):
        with pytest.raises(ValueError, match="built for clips of 8 frames"):
            m(torch.rand(2, 6, 1, 32, 32))
    with pytest.raises(ValueError, match="32, 32"):
        m(torch.rand(2, 8, 1, 28, 28))                                # the wrong frame size, said as such
    with pytest.raises(ValueError, match=r"\[B, "):
        m(torch.rand(2, 8, 3, 32, 32))                                # the wrong number of channels


def test_time_padding_covers_every_frame():
    for t in range(1, 30):
        for k in (2, 3, 4, 5):
            for stride in range(1, k + 1):            # a stride beyond the kernel skips frames whatever the padding
                pad = video._time_padding(t, k, stride)
                covered = set()
                for start in range(0, t + pad - k + 1, stride):
                    covered |= set(range(start, start + k))
                assert set(range(t)) <= covered, (t, k, stride, pad)
                assert pad < k + stride, "no more padding than needed"


def test_flow_stream_and_score_fusion():
    m = video.FlowStream(5, flows=7)
    assert m(torch.rand(2, 7, 2, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="2 channels"):
        m(torch.rand(2, 7, 1, 32, 32))
    with pytest.raises(ValueError, match="built for 7 flow fields per clip"):
        m(torch.rand(2, 5, 2, 32, 32))
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    fused = video.fuse_scores(a, b)
    torch.testing.assert_close(fused, (F.softmax(a, 1) + F.softmax(b, 1)) / 2)
    torch.testing.assert_close(fused.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="same"):
        video.fuse_scores(a, torch.randn(4, 6))
    with pytest.raises(ValueError, match="at least one"):
        video.fuse_scores()
