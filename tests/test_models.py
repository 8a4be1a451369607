"""cvdl.models: the pattern builder, parameter counts, residual blocks, softmax / cross-entropy."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cvdl import arith
from cvdl.models import (BaselineCNN, Normalize, ResidualBlock, conv_params, count_params, cross_entropy,
                         fc_params, format_pattern, layer_string, linear_classifier, make_cnn,
                         parse_pattern, small_resnet, softmax, two_layer_net)


# ---------------------------------------------------------------- the pattern builder

@pytest.mark.parametrize("n,m,k,pool", [(1, 1, 0, True), (2, 2, 1, True), (3, 1, 2, True), (2, 3, 0, False),
                                        (1, 4, 1, True)])
def test_make_cnn_layer_sequence_follows_pattern(n, m, k, pool):
    model = make_cnn(format_pattern(n, m, k, pool), channels=4, hidden=8)
    block = "-".join(["CONV-RELU"] * n + (["POOL"] if pool else []))
    want = "-".join([block] * m + ["FC-RELU"] * k + ["FC"])
    assert layer_string(model) == want
    # the same network from numbers
    assert repr(make_cnn(n, m, k, pool=pool, channels=4, hidden=8)) == repr(model)


def test_make_cnn_channels_double_and_shapes():
    model = make_cnn("[(CONV-RELU)*2-POOL]*3-(FC-RELU)*2", channels=8, hidden=(32, 16))
    convs = [mod for mod in model if isinstance(mod, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32]
    assert [c.in_channels for c in convs] == [1, 8, 8, 16, 16, 32]
    fcs = [mod for mod in model if isinstance(mod, nn.Linear)]
    # 28 → 14 → 7 → 3 after three poolings: 32·3·3 features
    assert [(f.in_features, f.out_features) for f in fcs] == [(32 * 3 * 3, 32), (32, 16), (16, 10)]
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)


def test_make_cnn_colour_nonsquare_batchnorm_dropout():
    model = make_cnn(2, 2, 1, in_channels=3, image_size=(32, 24), channels=(6, 12), hidden=20,
                     num_classes=7, batch_norm=True, dropout=0.5, kernel_size=5)
    assert layer_string(model) == ("CONV-BN-RELU-CONV-BN-RELU-POOL-CONV-BN-RELU-CONV-BN-RELU-POOL-"
                                   "DROPOUT-FC-RELU-DROPOUT-FC")
    assert model(torch.randn(4, 3, 32, 24)).shape == (4, 7)
    assert model[-1].in_features == 20 and model[-4].in_features == 12 * 8 * 6


def test_make_cnn_without_conv_is_an_mlp():
    model = make_cnn(0, 0, 1, hidden=30)
    assert layer_string(model) == "FC-RELU-FC"
    assert count_params(model) == count_params(two_layer_net(hidden=30))


def test_parse_pattern_variants():
    assert parse_pattern("[(CONV-RELU)*2-POOL]*3-(FC-RELU)*1") == (2, 3, 1, True)
    assert parse_pattern("[(CONV-RELU)*5-POOL?]*2-(FC-RELU)*2, SOFTMAX") == (5, 2, 2, True)
    assert parse_pattern("[(conv-relu)*1]*4") == (1, 4, 0, False)
    assert parse_pattern("[(CONV-RELU)*1-POOL]*1-(FC-RELU)*0-FC") == (1, 1, 0, True)
    for n, m, k, pool in [(1, 2, 0, True), (3, 1, 2, False)]:
        assert parse_pattern(format_pattern(n, m, k, pool)) == (n, m, k, pool)


@pytest.mark.parametrize("bad", ["CONV-RELU-POOL", "[(CONV-RELU)*x-POOL]*2", "[(CONV-RELU)*2-POOL]*2-FC-RELU",
                                 "", "[(CONV-POOL)*2]*1"])
def test_parse_pattern_rejects_garbage(bad):
    with pytest.raises(ValueError, match="pattern"):
        parse_pattern(bad)


def test_make_cnn_bad_arguments():
    with pytest.raises(ValueError, match="not both"):
        make_cnn("[(CONV-RELU)*1-POOL]*1", 2, 1)
    with pytest.raises(ValueError, match="give M and K"):
        make_cnn(2)
    with pytest.raises(ValueError, match="shrink"):
        make_cnn(1, 5, 0)  # 28 → 14 → 7 → 3 → 1 → 0
    with pytest.raises(ValueError, match="one entry per block"):
        make_cnn(1, 2, 0, channels=(8, 16, 32))
    with pytest.raises(ValueError, match="odd"):
        make_cnn(1, 1, 0, kernel_size=4)
    with pytest.raises(ValueError, match="N >= 1"):
        make_cnn(0, 2, 1)
    with pytest.raises(ValueError, match="non-negative"):
        make_cnn(1, -1, 0)
    with pytest.raises(ValueError, match="dropout"):
        make_cnn(1, 1, 0, dropout=1.5)
    with pytest.raises(ValueError, match="pattern"):
        make_cnn(2.0, 1, 1)


# ---------------------------------------------------------------- parameter counts

def test_count_params_matches_sum_of_numel():
    for model in [make_cnn(2, 2, 1), linear_classifier(), two_layer_net(), BaselineCNN(), small_resnet()]:
        assert count_params(model) == sum(p.numel() for p in model.parameters())
    model = make_cnn(1, 2, 1)
    for p in model[0].parameters():
        p.requires_grad_(False)
    assert count_params(model, trainable_only=True) == count_params(model) - conv_params(1, 16, 3)


def test_fc_and_conv_formulas_match_torch_layers():
    for i, o, b in [(3072, 100, True), (784, 10, False), (1, 1, True)]:
        assert fc_params(i, o, b) == count_params(nn.Linear(i, o, bias=b))
    for ci, co, k, b in [(3, 10, 5, True), (64, 32, 1, True), (16, 16, 3, False)]:
        assert conv_params(ci, co, k, b) == count_params(nn.Conv2d(ci, co, k, bias=b))
    assert conv_params(3, 10, 5) == 760  # the slide: 10 filters of 5×5×3, +1 bias each
    # an FC layer on a 32×32×3 image with 100 units vs 100 3×3 conv filters: the FC layer grows with the image
    assert fc_params(32 * 32 * 3, 100) == 307_300 and conv_params(3, 100, 3) == 2_800


def test_make_cnn_count_by_hand():
    model = make_cnn("[(CONV-RELU)*2-POOL]*2-(FC-RELU)*1", channels=(16, 32), hidden=64)
    by_hand = (conv_params(1, 16, 3) + conv_params(16, 16, 3) + conv_params(16, 32, 3) + conv_params(32, 32, 3)
               + fc_params(32 * 7 * 7, 64) + fc_params(64, 10))
    assert count_params(model) == by_hand
    assert count_params(linear_classifier()) == 784 * 10 + 10
    assert count_params(two_layer_net(hidden=100)) == 784 * 100 + 100 + 100 * 10 + 10


def test_baseline_shapes_and_count():
    model = BaselineCNN(c1=8, c2=16, hidden=32)
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    assert model.features(x).shape == (3, 16 * 4 * 4)
    assert layer_string(model) == "CONV-RELU-POOL-CONV-RELU-POOL-FC-RELU-FC"
    with pytest.raises(ValueError, match="28, 28"):
        model(torch.randn(3, 1, 32, 32))
    assert count_params(model) == conv_params(1, 8, 5) + conv_params(8, 16, 5) + fc_params(16 * 4 * 4, 32) + fc_params(32, 10)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-3, ValueError),
                                        (2.5, TypeError), (True, TypeError), (None, TypeError)])
def test_counts_reject_bad_sizes(bad, error):
    # a size of the wrong type is a TypeError, an integer below 1 a ValueError
    with pytest.raises(error, match="must be a positive integer"):
        fc_params(bad, 10)
    with pytest.raises(error, match="out_channels must be a positive integer"):
        conv_params(3, bad, 3)
    with pytest.raises(error, match="num_classes must be a positive integer"):
        linear_classifier(num_classes=bad)


def test_conv_params_is_the_arithmetic_one():
    assert conv_params is arith.conv_params                  # one formula, re-exported here
    assert conv_params(16, 16, 3, False) == conv_params(16, 16, 3, bias=False) == 16 * 16 * 9
    assert conv_params(4, 8, (3, 1), groups=2) == count_params(nn.Conv2d(4, 8, (3, 1), groups=2))


def test_count_params_rejects_non_module():
    with pytest.raises(TypeError, match="nn.Module"):
        count_params([torch.zeros(3)])


# ---------------------------------------------------------------- input normalisation

def test_normalize_scalar_matches_the_formula_and_keeps_0d_buffers():
    n = Normalize(0.5, 0.25)
    assert torch.allclose(n(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-2.0, 0.0, 2.0]))
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(n(x), (x - 0.5) / 0.25)
    # 0-d buffers, as the course checkpoints store them: {"mean": tensor(0.5), "std": tensor(0.25)}
    assert {k: tuple(v.shape) for k, v in n.state_dict().items()} == {"mean": (), "std": ()}
    assert n.channels is None
    assert repr(n) == "Normalize(mean=0.5, std=0.25)"


def test_normalize_per_channel_matches_torchvision():
    from torchvision.transforms.v2.functional import normalize

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    n = Normalize(mean, std)
    assert n.mean.shape == n.std.shape == (3, 1, 1) and n.channels == 3
    x = torch.rand(5, 3, 8, 6)
    torch.testing.assert_close(n(x), normalize(x, list(mean), list(std)))
    assert repr(n) == "Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))"
    n64 = Normalize(mean, std).double()                    # buffers follow .to(dtype)
    assert n64.mean.dtype == torch.float64 and n64(x.double()).dtype == torch.float64
    torch.testing.assert_close(Normalize([0.5, 0.5, 0.5], 0.5)(x), (x - 0.5) / 0.5)   # mixed kinds
    with pytest.raises(ValueError, match=r"statistics for 3 channels.*\(5, 1, 8, 6\)"):
        n(torch.rand(5, 1, 8, 6))                          # would broadcast silently to 3 channels


def test_normalize_rejects_bad_statistics():
    with pytest.raises(ValueError, match="std must be a positive number, got 0.0"):
        Normalize(0.0, 0.0)
    with pytest.raises(ValueError, match=r"std\[1\] must be a positive number, got -0.1"):
        Normalize((0.5, 0.5), (0.2, -0.1))
    with pytest.raises(ValueError, match="mean must be a finite number, got nan"):
        Normalize(float("nan"), 1.0)
    with pytest.raises(ValueError, match="same number of channels"):
        Normalize((0.5, 0.5, 0.5), (0.2, 0.2))
    with pytest.raises(ValueError, match="empty"):
        Normalize((), 1.0)
    with pytest.raises(TypeError, match="mean must be a finite number"):
        Normalize("0.5", 1.0)
    with pytest.raises(TypeError, match=r"std\[0\] must be a positive number"):
        Normalize((0.5,), (None,))


# ---------------------------------------------------------------- residual blocks

@pytest.mark.parametrize("cin,cout,stride,hw,want_hw", [(8, 8, 1, 14, 14), (8, 16, 2, 14, 7), (8, 16, 1, 9, 9),
                                                        (4, 4, 2, 7, 4)])
def test_residual_block_shapes_and_shortcut(cin, cout, stride, hw, want_hw):
    block = ResidualBlock(cin, cout, stride=stride)
    y = block(torch.randn(2, cin, hw, hw))
    assert y.shape == (2, cout, want_hw, want_hw)
    assert (y >= 0).all()  # ReLU after the addition
    identity = cin == cout and stride == 1
    assert isinstance(block.shortcut, nn.Identity) == identity
    if not identity:
        assert block.shortcut[0].kernel_size == (1, 1) and block.shortcut[0].stride == (stride, stride)


def test_residual_block_with_zeroed_branch_is_identity():
    torch.manual_seed(0)
    x = torch.relu(torch.randn(4, 8, 10, 10))  # non-negative, as after the previous block's ReLU
    block = ResidualBlock(8, zero_init=True).train()
    assert torch.equal(block(x), x)
    # the same by zeroing the branch's last conv by hand, in eval mode with trained-looking BN stats
    block = ResidualBlock(8)
    block.bn2.running_mean.fill_(0.0)
    block.bn2.bias.data.zero_()
    block.conv2.weight.data.zero_()
    assert torch.equal(block.eval()(x), x)
    # and a normal block is not the identity
    assert not torch.allclose(ResidualBlock(8).eval()(x), x)


def test_residual_block_matches_manual_computation():
    torch.manual_seed(1)
    block = ResidualBlock(3, 6, stride=2).eval()
    x = torch.randn(2, 3, 8, 8)
    bn = lambda t, m: F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)  # noqa: E731
    branch = bn(F.conv2d(F.relu(bn(F.conv2d(x, block.conv1.weight, stride=2, padding=1), block.bn1)),
                         block.conv2.weight, padding=1), block.bn2)
    short = bn(F.conv2d(x, block.shortcut[0].weight, stride=2), block.shortcut[1])
    torch.testing.assert_close(block(x), F.relu(branch + short))


def test_residual_block_and_resnet_bad_input():
    with pytest.raises(ValueError, match=r"\[N, 8, H, W\]"):
        ResidualBlock(8)(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError):
        ResidualBlock(0, 4)
    with pytest.raises(ValueError):
        small_resnet(channels=())
    assert small_resnet((4, 8))(torch.randn(2, 1, 28, 28)).shape == (2, 10)


# ---------------------------------------------------------------- linear classifier and 2-layer net

def test_linear_classifier_is_wx_plus_b():
    torch.manual_seed(0)
    model = linear_classifier((3, 4, 4), num_classes=5)
    x = torch.randn(6, 3, 4, 4)
    W, b = model[1].weight, model[1].bias
    torch.testing.assert_close(model(x), x.reshape(6, -1) @ W.T + b)
    assert model[1].weight.shape == (5, 48)


def test_two_layer_net_formula():
    torch.manual_seed(0)
    model = two_layer_net(12, hidden=7, num_classes=3)
    x = torch.randn(5, 12)
    W1, b1, W2, b2 = model[1].weight, model[1].bias, model[3].weight, model[3].bias
    torch.testing.assert_close(model(x), torch.clamp(x @ W1.T + b1, min=0) @ W2.T + b2)
    with pytest.raises(ValueError, match="in_shape"):
        two_layer_net(in_shape=(1, 0, 28))


# ---------------------------------------------------------------- softmax and cross-entropy

def test_softmax_matches_torch_and_is_stable():
    torch.manual_seed(0)
    s = torch.randn(7, 10) * 5
    torch.testing.assert_close(softmax(s), torch.softmax(s, dim=1))
    big = torch.tensor([[1000.0, 1000.0, -1000.0]])
    torch.testing.assert_close(softmax(big), torch.tensor([[0.5, 0.5, 0.0]]))
    torch.testing.assert_close(softmax(s).sum(1), torch.ones(7))


@pytest.mark.parametrize("n,c,scale", [(1, 2, 1.0), (16, 10, 1.0), (8, 3, 100.0), (5, 1000, 3.0)])
def test_cross_entropy_matches_F_cross_entropy(n, c, scale):
    torch.manual_seed(n + c)
    s = torch.randn(n, c, dtype=torch.float64) * scale
    y = torch.randint(0, c, (n,))
    torch.testing.assert_close(cross_entropy(s, y), F.cross_entropy(s, y))
    # and its gradient, which is softmax(s) - onehot(y) over N
    s1 = s.clone().requires_grad_(True)
    cross_entropy(s1, y).backward()
    torch.testing.assert_close(s1.grad, (softmax(s) - F.one_hot(y, c)) / n)


def test_cross_entropy_of_uniform_scores_is_log_c():
    assert abs(cross_entropy(torch.zeros(4, 10), torch.arange(4)).item() - torch.log(torch.tensor(10.0)).item()) < 1e-6


def test_cross_entropy_bad_input():
    s = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"\[N\]"):
        cross_entropy(s, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="0..2"):
        cross_entropy(s, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="integer"):
        cross_entropy(s, torch.zeros(4))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        cross_entropy(torch.randn(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        cross_entropy(torch.randn(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError):
        softmax(torch.zeros(3, 0))
