"""cvdl.augment: batch augmentation on the device, checked against torchvision and plain shifts."""
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from cvdl.augment import RandomAffine, RandomCrop, affine, affine_theta, pad_crop, translate


def _shift_by_slicing(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """One image ``[C, H, W]`` moved down ``dy`` and right ``dx`` with zero fill, by slicing."""
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        img[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


# ---------------------------------------------------------------- pad and crop

def test_pad_crop_matches_torchvision_pad_then_crop():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 11, 9)
    p = 3
    top = torch.tensor([0, 3, 6, 1, 5, 2])
    left = torch.tensor([6, 3, 0, 4, 2, 5])
    out = pad_crop(x, p, top, left)
    padded = TF.pad(x, [p])
    for b in range(6):
        want = TF.crop(padded[b], int(top[b]), int(left[b]), 11, 9)
        assert torch.equal(out[b], want)


def test_pad_crop_centre_is_identity_and_shapes_kept():
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(pad_crop(x, 2, 2, 2), x)
    assert torch.equal(pad_crop(x, 0, 0, 0), x)


@pytest.mark.parametrize("dy,dx", [(0, 0), (2, -1), (-3, 4), (5, 0), (0, -5)])
def test_translate_equals_roll_with_the_wrapped_part_zeroed(dy, dx):
    torch.manual_seed(1)
    x = torch.rand(2, 2, 10, 12)
    out = translate(x, dy, dx)
    rolled = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    mask = _shift_by_slicing(torch.ones(1, 10, 12), dy, dx).bool()  # where the shifted image has content
    assert torch.equal(out, rolled * mask)
    assert torch.equal(out[0], _shift_by_slicing(x[0], dy, dx))


def test_translate_per_image_and_against_torchvision_affine():
    torch.manual_seed(2)
    x = torch.rand(3, 1, 16, 16)
    dy, dx = torch.tensor([1, -2, 0]), torch.tensor([3, 0, -4])
    out = translate(x, dy, dx)
    for b in range(3):
        want = TF.affine(x[b], angle=0.0, translate=[int(dx[b]), int(dy[b])], scale=1.0, shear=[0.0, 0.0],
                         interpolation=InterpolationMode.NEAREST)
        assert torch.equal(out[b], want)


def test_random_crop_is_a_random_integer_shift_and_reproducible():
    x = torch.rand(64, 1, 12, 12)
    a, b = RandomCrop(padding=2, seed=5)(x), RandomCrop(padding=2, seed=5)(x)
    assert torch.equal(a, b)  # same seed, same shifts
    assert not torch.equal(a, RandomCrop(padding=2, seed=6)(x))
    # every output image is one of the 25 shifts of its input, and the shifts vary across the batch
    shifts = []
    for i in range(64):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(a[i], _shift_by_slicing(x[i], dy, dx))]
        assert len(found) == 1
        shifts.append(found[0])
    assert len(set(shifts)) >= 10
    assert torch.equal(RandomCrop(padding=0)(x), x)


# ---------------------------------------------------------------- affine warps

@pytest.mark.parametrize("angle,trans,scale", [
    (30.0, (0.0, 0.0), 1.0), (-17.0, (2.5, 1.25), 0.8), (0.0, (3.0, -2.0), 1.0), (90.0, (0.0, 0.0), 1.0),
    (8.0, (-1.5, 0.5), 1.2), (0.0, (0.0, 0.0), 0.5),
])
@pytest.mark.parametrize("size", [(28, 28), (20, 32)])
def test_affine_matches_torchvision(angle, trans, scale, size):
    torch.manual_seed(3)
    x = torch.rand(2, 3, *size)
    out = affine(x, angle, trans, scale)
    want = TF.affine(x, angle=angle, translate=list(trans), scale=scale, shear=[0.0, 0.0],
                     interpolation=InterpolationMode.BILINEAR)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)


def test_affine_per_image_parameters_match_torchvision_one_by_one():
    torch.manual_seed(4)
    x = torch.rand(4, 1, 28, 28)
    aug = RandomAffine(degrees=15, translate=0.1, scale=(0.8, 1.2), seed=0)
    p = aug.sample(4, (28, 28))
    out = affine(x, p["angle"], p["translate"], p["scale"])
    for b in range(4):
        want = TF.affine(x[b], angle=float(p["angle"][b]), translate=p["translate"][b].tolist(),
                         scale=float(p["scale"][b]), shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR)
        torch.testing.assert_close(out[b], want, atol=1e-5, rtol=0)


def test_affine_rotation_is_clockwise_and_identity_is_identity():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 7] = 1.0  # right of the centre
    assert affine(x, 90.0, mode="nearest")[0, 0].nonzero().tolist() == [[7, 4]]  # now below it
    y = torch.rand(3, 2, 13, 17)
    torch.testing.assert_close(affine(y), y, atol=1e-5, rtol=0)
    # integer translation with bilinear sampling hits pixel centres: the exact shift
    torch.testing.assert_close(affine(y, translate=(2.0, -1.0)), translate(y, -1, 2), atol=1e-5, rtol=0)


def test_affine_theta_matches_affine_grid_identity():
    theta = affine_theta(0.0, (0.0, 0.0), 1.0, (7, 5))
    torch.testing.assert_close(theta, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]]))


def test_random_affine_reproducible_bounded_and_varied():
    x = torch.rand(32, 1, 28, 28)
    a = RandomAffine(degrees=10, translate=0.1, scale=(0.9, 1.1), seed=1)
    p = a.sample(1000, (28, 28))
    assert p["angle"].abs().max() <= 10 and p["angle"].std() > 3
    assert p["translate"].abs().max() <= 2.8 + 1e-6
    assert p["scale"].min() >= 0.9 and p["scale"].max() <= 1.1
    out1 = RandomAffine(seed=1)(x)
    assert torch.equal(out1, RandomAffine(seed=1)(x))
    assert not torch.allclose(out1, x)
    assert out1.shape == x.shape and out1.dtype == x.dtype
    assert repr(RandomAffine(seed=1)) == "RandomAffine(degrees=10, translate=0.1, scale=(0.9, 1.1), seed=1)"


def test_augmentations_work_as_fit_augment():
    from cvdl.train import fit

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    x, y = torch.rand(40, 1, 8, 8), torch.randint(0, 3, (40,))
    for aug in (RandomAffine(seed=0), RandomCrop(padding=1, seed=0)):
        h = fit(model, (x, y), epochs=1, batch_size=16, augment=aug, progress=False, device="cpu")
        assert len(h) == 1


def test_bad_input_raises():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        affine(torch.rand(8, 8))
    with pytest.raises(TypeError, match="floating"):
        RandomCrop()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="0..4"):
        pad_crop(x, 2, 5, 0)
    with pytest.raises(ValueError, match="padding"):
        pad_crop(x, -1, 0, 0)
    with pytest.raises(TypeError, match="padding must be a non-negative integer"):
        RandomCrop(padding=1.5)
    with pytest.raises(ValueError, match="one value per image"):
        pad_crop(x, 1, torch.tensor([0, 1, 2]), 0)
    with pytest.raises(ValueError, match="scale"):
        affine(x, scale=0.0)
    with pytest.raises(ValueError, match="batch of 2"):
        affine(x, angle=torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="mode"):
        affine(x, mode="bicubic")
    with pytest.raises(ValueError, match="degrees"):
        RandomAffine(degrees=-1)
    with pytest.raises(ValueError, match="scale"):
        RandomAffine(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="translate"):
        RandomAffine(translate=2)
