"""Views (batched augmentations): contract, exact identities with everything off, table corruptions."""

from __future__ import annotations

import pytest
import torch

from selfmeta.modalities import MODALITIES, VIEW_ARGS
from selfmeta.modalities.image import ImageViews
from selfmeta.modalities.table import TableViews
from selfmeta.errors import SelfmetaError
from selfmeta.options import check_options


OFF = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0, jitter=0.0, grayscale=0.0, blur=0.0)


def images(shape=(6, 3, 16, 12), seed=0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=dtype)


def test_each_modality_owns_its_view_family():
    assert MODALITIES.get("image").views is ImageViews and MODALITIES.get("table").views is TableViews


@pytest.mark.parametrize("shape", [(5, 3, 16, 12), (5, 1, 8, 8), (4, 3, 64, 64)], ids=["rgb", "grey", "rgb64-blur"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_image_views_contract(shape, dtype):
    torch.manual_seed(0)
    x = images(shape, dtype=dtype)
    views = ImageViews(shape[1:], jitter=1.0, grayscale=0.5, hflip=0.5)
    a, b = views(x), views(x)
    for v in (a, b):
        assert v.shape == x.shape and v.dtype == x.dtype and v.device == x.device
        assert bool(torch.isfinite(v).all())
        assert float(v.min()) >= -1e-6 and float(v.max()) <= 1 + 1e-6
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, x)


def test_blur_default_depends_on_size():
    assert ImageViews((3, 32, 32)).blur == 0.0
    assert ImageViews((3, 64, 64)).blur == 0.5
    assert ImageViews((3, 32, 32), blur=0.3).blur == 0.3


@pytest.mark.parametrize("shape", [(4, 3, 16, 12), (3, 1, 28, 28), (2, 3, 7, 9)])
def test_everything_off_is_identity(shape):
    torch.manual_seed(1)
    x = images(shape)
    out = ImageViews(shape[1:], **OFF)(x)
    assert torch.allclose(out, x, atol=1e-5)


def test_hflip_always_is_mirror():
    torch.manual_seed(2)
    x = images((4, 3, 10, 7))
    out = ImageViews((3, 10, 7), **{**OFF, "hflip": 1.0})(x)
    assert torch.allclose(out, torch.flip(x, dims=[3]), atol=1e-5)
    assert not torch.allclose(out, x, atol=1e-3)


def test_crop_changes_images_but_keeps_range():
    torch.manual_seed(3)
    x = images((8, 1, 16, 16))
    out = ImageViews((1, 16, 16), **{**OFF, "crop_scale": (0.2, 0.3)})(x)
    assert not torch.allclose(out, x, atol=1e-2)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_grayscale_always_gives_equal_channels():
    torch.manual_seed(4)
    x = images((5, 3, 8, 8))
    out = ImageViews((3, 8, 8), **{**OFF, "grayscale": 1.0})(x)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
    # Luma weights: a grey value between the channels' min and max, not just a copy of one channel.
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(out[:, 0], expected, atol=1e-3)


def test_grayscale_ignored_for_grey_images():
    torch.manual_seed(5)
    x = images((3, 1, 8, 8))
    assert torch.allclose(ImageViews((1, 8, 8), **{**OFF, "grayscale": 1.0})(x), x, atol=1e-5)


def test_jitter_changes_values_within_range():
    torch.manual_seed(6)
    x = images((6, 3, 8, 8))
    out = ImageViews((3, 8, 8), **{**OFF, "jitter": 1.0})(x)
    assert not torch.allclose(out, x, atol=1e-3)
    assert float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6


def test_views_follow_the_global_seed():
    x = images((4, 3, 16, 16))
    views = ImageViews((3, 16, 16))
    torch.manual_seed(7)
    a = views(x)
    torch.manual_seed(7)
    b = views(x)
    assert torch.equal(a, b)


def checked(cls, **options):
    """View options as build_method checks them (the one options layer)."""
    return check_options(f"{VIEWS_NAME[cls]} views", cls, options, VIEW_ARGS)


VIEWS_NAME = {ImageViews: "image", TableViews: "table"}


def test_unknown_image_option():
    with pytest.raises(SelfmetaError, match="unknown option 'flip' for image views") as info:
        checked(ImageViews, flip=0.5)
    for name in ("crop_scale", "hflip", "jitter", "grayscale", "blur"):
        assert name in str(info.value)


def test_list_options_become_tuples():
    assert checked(ImageViews, crop_scale=[0.5, 1.0]) == {"crop_scale": (0.5, 1.0)}
    views = ImageViews((3, 8, 8), **checked(ImageViews, crop_scale=[0.5, 1.0]))
    assert views.o.crop_scale == (0.5, 1.0)


@pytest.mark.parametrize("name, value, says", [
    ("elastic", "abc", "elastic takes a number >= 0, got 'abc'"),
    ("rotation", -15, "rotation takes a number >= 0 and <= 180, got -15"),
    ("hflip", True, "hflip takes a number"),
    ("hflip", 2, "hflip takes a number >= 0 and <= 1, got 2"),
    ("jitter", None, "jitter takes a number"),
    ("crop_scale", 0.5, r"crop_scale takes a pair of numbers > 0 and <= 1, low <= high, got 0\.5; e\.g\. crop_scale=\[0\.2,1\]"),
    ("crop_scale", [1, 0.2], "crop_scale takes a pair of numbers > 0 and <= 1, low <= high, got \\[1, 0.2\\]"),
    ("crop_scale", [0.5, 1.0, 2.0], "crop_scale takes a pair"),
    ("crop_ratio", [0.5, "x"], "crop_ratio takes a pair"),
    ("blur_sigma", [0, 0], "blur_sigma takes a pair of numbers > 0"),
])
def test_bad_option_values_are_one_line_errors(name, value, says):
    with pytest.raises(SelfmetaError, match=says):
        checked(ImageViews, **{name: value})


def test_good_option_values_pass():
    options = checked(ImageViews, blur=None, rotation=15, elastic=2.0, crop_ratio=(1, 1))
    views = ImageViews((1, 8, 8), **options)
    assert (views.o.rotation, views.o.elastic, views.o.crop_ratio, views.blur) == (15, 2.0, (1, 1), 0.0)
    with pytest.raises(SelfmetaError, match="swap takes a number >= 0 and <= 1, got nan"):
        checked(TableViews, swap=float("nan"))


# ------------------------------------------------------------------------------------------- tables


def table(n=64, d=5, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * torch.arange(1, d + 1) + 10 * torch.arange(d)


def table_views(x: torch.Tensor, **options) -> TableViews:
    return TableViews((x.shape[1],), x.mean(0), x.std(0), **options)


def test_table_views_contract():
    torch.manual_seed(0)
    x = table()
    views = table_views(x)
    a, b = views(x), views(x)
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, x)


def test_swap_takes_values_from_the_same_column():
    torch.manual_seed(1)
    x = table(n=40, d=6)
    out = table_views(x, swap=1.0, mask=0.0, noise=0.0)(x)
    for j in range(x.shape[1]):
        # Every value comes from column j of some row (columns have disjoint ranges, so a value
        # taken from another column would not be found).
        assert bool(torch.isin(out[:, j], x[:, j]).all())
    assert (out != x).float().mean() > 0.8  # nearly every value was swapped with another row's


def test_swap_probability():
    torch.manual_seed(2)
    x = torch.arange(4000 * 3, dtype=torch.float32).reshape(4000, 3)  # every value distinct
    out = table_views(x, swap=0.3, mask=0.0, noise=0.0)(x)
    changed = float((out != x).float().mean())
    assert abs(changed - 0.3) < 0.02  # a donor is the row itself with probability 1/4000


def test_mask_all_gives_the_mean():
    torch.manual_seed(3)
    x = table()
    out = table_views(x, swap=0.0, mask=1.0, noise=0.0)(x)
    assert torch.allclose(out, x.mean(0).expand_as(x))


def test_mask_probability():
    torch.manual_seed(4)
    x = table(n=4000, d=4)
    mean = x.mean(0)
    out = table_views(x, swap=0.0, mask=0.25, noise=0.0)(x)
    masked = out == mean
    assert abs(float(masked.float().mean()) - 0.25) < 0.02
    assert torch.equal(out[~masked], x[~masked])


def test_noise_scales_with_feature_std():
    torch.manual_seed(5)
    x = table(n=20000, d=4)
    std = x.std(0)
    out = table_views(x, swap=0.0, mask=0.0, noise=0.5)(x)
    delta = out - x
    assert torch.allclose(delta.mean(0), torch.zeros(4), atol=0.02 * float(std.max()))
    assert torch.allclose(delta.std(0), 0.5 * std, rtol=0.03)
    # The rows' spread grows as sqrt(1 + 0.5^2) times.
    assert torch.allclose(out.std(0), std * (1 + 0.25) ** 0.5, rtol=0.03)


def test_everything_off_table_is_identity():
    x = table()
    assert torch.equal(table_views(x, swap=0.0, mask=0.0, noise=0.0)(x), x)


def test_unknown_table_option():
    with pytest.raises(SelfmetaError, match="unknown option 'dropout' for table views") as info:
        checked(TableViews, dropout=0.1)
    assert "swap, mask, noise" in str(info.value)


def test_jitter_on_two_channel_images():
    torch.manual_seed(0)
    views = ImageViews((2, 8, 8), jitter=1.0)
    out = views(torch.rand(4, 2, 8, 8))
    assert out.shape == (4, 2, 8, 8) and out.min() >= 0 and out.max() <= 1


def test_rotation_is_an_isometry_in_pixels():
    from selfmeta.modalities.image import crop_flip_grid

    torch.manual_seed(0)
    like = torch.zeros(1)
    for size in ((8, 8), (6, 10)):
        h, w = size
        grid = crop_flip_grid(5, size, (1.0, 1.0), (1.0, 1.0), 0.0, like, degrees=40.0)  # (5, H, W, 2)
        pixels = (grid + 1) / 2 * torch.tensor([w, h])          # back to pixel units
        step_x = (pixels[:, :, 1:] - pixels[:, :, :-1]).norm(dim=-1)  # neighbours one pixel apart stay so
        step_y = (pixels[:, 1:, :] - pixels[:, :-1, :]).norm(dim=-1)
        assert torch.allclose(step_x, torch.ones_like(step_x), atol=1e-5)
        assert torch.allclose(step_y, torch.ones_like(step_y), atol=1e-5)
        assert not torch.allclose(grid, crop_flip_grid(5, size, (1.0, 1.0), (1.0, 1.0), 0.0, like))


def test_elastic_field_is_smooth_with_the_asked_size():
    from selfmeta.modalities.image import elastic_field

    torch.manual_seed(0)
    size, pixels = (28, 20), 1.5
    field = elastic_field(2000, size, pixels, torch.zeros(1, dtype=torch.float64))  # (n, H, W, 2)
    assert field.shape == (2000, *size, 2)
    in_pixels = field * torch.tensor([size[1] / 2, size[0] / 2], dtype=torch.float64)
    std = in_pixels.std(dim=0)                      # (H, W, 2): per-pixel spread over the batch
    assert torch.allclose(std[0, 0], torch.full((2,), pixels, dtype=torch.float64), rtol=0.1)  # a knot
    assert float(std.min()) > 0.55 * pixels and float(std.max()) < 1.1 * pixels
    # Smooth: neighbouring pixels move together (an independent field per pixel would give a ratio of 1.41).
    step = (in_pixels[:, :, 1:] - in_pixels[:, :, :-1]).abs().mean()
    assert float(step) < 0.4 * float(in_pixels.abs().mean())


def test_elastic_moves_strokes_a_few_pixels_and_off_is_unchanged():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 13:15, 4:24] = 1.0                      # a horizontal stroke
    out = ImageViews((1, 28, 28), **{**OFF, "elastic": 1.5})(x)
    assert not torch.allclose(out, x, atol=1e-2)
    rows = torch.arange(28, dtype=torch.float32).view(1, 1, 28, 1)
    centre = (out * rows).sum(dim=(1, 2, 3)) / out.sum(dim=(1, 2, 3))   # stroke's mean row, per image
    assert float((centre - 13.5).abs().max()) < 6 and float((centre - 13.5).abs().mean()) > 0.2
    assert torch.allclose(ImageViews((1, 28, 28), **{**OFF, "elastic": 0.0})(x), x, atol=1e-5)
