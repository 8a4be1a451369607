"""cvdl.plot: every figure helper draws what it is given and rejects what it can't draw."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from cvdl import plot  # noqa: E402
from cvdl.train import History  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _shown(fig):
    return [ax for ax in fig.axes if ax.images]


def test_show_images_accepts_every_layout():
    for batch in (torch.rand(5, 1, 6, 6), torch.rand(5, 3, 6, 6), np.random.rand(5, 6, 6),
                  np.random.randint(0, 255, (5, 6, 6, 3), dtype=np.uint8)):
        fig = plot.show_images(batch, titles=list("abcde"), ncols=3)
        axes = _shown(fig)
        assert len(axes) == 5 and len(fig.axes) == 6  # 2×3 grid, one empty
        assert axes[0].get_title() == "a"
        arr = axes[0].images[0].get_array()
        assert arr.shape[:2] == (6, 6) and 0 <= arr.min() and arr.max() <= 1


def test_show_images_rescales_to_the_full_range():
    img = np.array([[-2.0, 0.0], [2.0, 6.0]])
    arr = _shown(plot.show_images([img]))[0].images[0].get_array()
    assert np.allclose(arr, [[0.0, 0.25], [0.5, 1.0]])


def test_show_images_errors():
    with pytest.raises(ValueError, match="at least one image"):
        plot.show_images([])
    with pytest.raises(ValueError, match="got 2 images but 1 titles"):
        plot.show_images([np.zeros((2, 2))] * 2, titles=["x"])
    with pytest.raises(ValueError, match=r"cannot show an image of shape \(2, 2, 2, 2\)"):
        plot.show_images([np.zeros((2, 2, 2, 2))])


def test_mosaic_tiles_every_image_into_one_picture(tmp_path, monkeypatch):
    monkeypatch.setenv("CVDL_ARRAYS_DIR", str(tmp_path))
    imgs = torch.rand(5, 3, 4, 6) * 10 - 3                       # any range: each image is rescaled
    fig = plot.mosaic(imgs, ncols=3, pad=1, title="patches", row_labels=["a", "b"])
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "patches"
    grid = fig.axes[0].images[0].get_array()
    assert grid.shape == (2 * 4 + 1, 3 * 6 + 2, 3)               # 2 rows, 3 columns, 1-pixel gaps
    for k in range(5):                                          # image k at row k // 3, column k % 3
        r, q = divmod(k, 3)
        tile = grid[r * 5:r * 5 + 4, q * 7:q * 7 + 6]
        ref = (imgs[k] - imgs[k].min()) / (imgs[k].max() - imgs[k].min())
        assert np.allclose(tile, ref.permute(1, 2, 0).numpy(), atol=1e-6)
    assert np.all(grid[5:, 14:] == 1) and np.all(grid[4] == 1)  # the empty slot and the gaps are white
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b"]
    assert np.allclose(np.load(tmp_path / "patches.npy"), np.moveaxis(grid, -1, 0))  # the drawn array, [C, H, W]
    grey = plot.mosaic([np.arange(6.0).reshape(2, 3)] * 2 + [np.zeros((2, 3))], ncols=2)   # [h, w] images
    g = grey.axes[0].images[0].get_array()
    assert g.shape == (2 * 2 + 2, 2 * 3 + 2) and g[0, 0] == 0 and g[1, 2] == 1.0 and np.all(g[4:6, 0:3] == 0)  # constant: black


def test_mosaic_errors():
    with pytest.raises(ValueError, match="at least one image"):
        plot.mosaic([])
    with pytest.raises(ValueError, match=r"images of one shape.*\(1, 4, 4\).*\(1, 5, 5\)"):
        plot.mosaic([torch.rand(1, 4, 4), torch.rand(1, 5, 5)])
    with pytest.raises(ValueError, match=r"C = 1 or 3, got images of shape \(2, 4, 4\)"):
        plot.mosaic(torch.rand(3, 2, 4, 4))
    with pytest.raises(ValueError, match="5 images in rows of 2 make 3 rows, got 2 row labels"):
        plot.mosaic(torch.rand(5, 1, 4, 4), ncols=2, row_labels=["a", "b"])
    with pytest.raises(ValueError, match="ncols must be a positive integer, got 0"):
        plot.mosaic(torch.rand(2, 1, 4, 4), ncols=0)
    with pytest.raises(TypeError, match="pad must be a non-negative integer"):
        plot.mosaic(torch.rand(2, 1, 4, 4), pad=1.5)


def test_plot_history_draws_one_line_per_split_and_run():
    h = History(rows=[{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 0.5, "val_acc": 0.6}
                      for e in (1, 2, 3)])
    fig = plot.plot_history({"a": h, "b": h})
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 4
    assert list(fig.axes[0].lines[0].get_ydata()) == [1.0, 0.5, 1 / 3]
    with pytest.raises(ValueError, match="at least one history"):
        plot.plot_history({})


def test_feature_maps_and_filters():
    assert len(_shown(plot.plot_feature_maps(torch.rand(1, 6, 5, 5)))) == 6
    assert len(_shown(plot.plot_filters(torch.rand(4, 3, 5, 5)))) == 4  # RGB filters
    fig = plot.plot_filters(torch.rand(8, 16, 3, 3))  # first input channel only
    assert len(_shown(fig)) == 8 and _shown(fig)[0].images[0].get_array().shape == (3, 3)
    with pytest.raises(ValueError, match=r"feature maps must be \[C,H,W\]"):
        plot.plot_feature_maps(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"filters must be \[out, in, k, k\]"):
        plot.plot_filters(torch.rand(3, 3))


def test_confusion_matches_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    fig = plot.plot_confusion(t, p, classes=list("abcd"), normalise=False)
    shown = fig.axes[0].images[0].get_array()
    assert np.array_equal(shown, confusion_matrix(t, p))
    norm = plot.plot_confusion(torch.tensor(t), torch.tensor(p)).axes[0].images[0].get_array()
    assert np.allclose(norm.sum(1), 1)
    with pytest.raises(ValueError, match="same shape"):
        plot.plot_confusion(t, p[:5])


def test_figures_record_the_arrays_they_show(tmp_path, monkeypatch):
    import cvdl

    monkeypatch.setenv("CVDL_ARRAYS_DIR", str(tmp_path))
    imgs = torch.rand(4, 1, 5, 5)
    plot.show_images(imgs, suptitle="my digits")
    cvdl.record_array("my digits", np.zeros((2, 2)))  # same name: kept apart, not overwritten
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert saved == ["my_digits-2.npy", "my_digits.npy"]
    assert np.allclose(np.load(tmp_path / "my_digits.npy"), imgs.numpy())
    monkeypatch.delenv("CVDL_ARRAYS_DIR")
    cvdl.record_array("ignored", np.ones(3))
    assert len(list(tmp_path.iterdir())) == 2
