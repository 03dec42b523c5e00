"""Masked reconstruction: masks hide the right fraction, differently per item; the loss counts exactly the
masked positions (against a loop over elements); the decoders give back the input's shape."""

from __future__ import annotations

import math

import pytest
import torch
from method_testing import option_error

from selfmeta.modalities.image import ImageViews
from selfmeta.modalities.table import TableViews
from selfmeta.encoders import Backbone, Normalize
from selfmeta.encoders.models import MLP, Conv4
from selfmeta.errors import SelfmetaError
from selfmeta.methods.reconstruction import (
    ConvDecoder,
    Reconstruction,
    default_patch_size,
    masked_count,
    patch_mask,
    random_mask,
)
from selfmeta.objectives.reconstruction import masked_mse



def image_method(shape=(3, 12, 12), **options) -> Reconstruction:
    torch.manual_seed(0)
    c = shape[0]
    normalize = Normalize(torch.linspace(0.3, 0.6, c).view(1, c, 1, 1), torch.full((1, c, 1, 1), 0.2))
    return Reconstruction(Backbone(normalize, Conv4(shape, width=8)), ImageViews(shape, hflip=0.0), **options)


def table_method(d: int = 7, **options) -> Reconstruction:
    torch.manual_seed(0)
    mean, std = torch.linspace(-1, 1, d).view(1, d), torch.linspace(0.5, 2, d).view(1, d)
    backbone = Backbone(Normalize(mean, std), MLP((d,), widths=(16,)))
    return Reconstruction(backbone, TableViews((d,), mean, std), **options)


def record(module: torch.nn.Module, seen: dict, key: str, inputs: bool = False) -> None:
    def hook(mod, args, output):
        seen[key] = (args[0] if inputs else output).detach()

    module.register_forward_hook(hook)


# ------------------------------------------------------------------------------------------------------ masks


@pytest.mark.parametrize("height,width,ratio", [(28, 28, 0.5), (32, 32, 0.3), (8, 8, 0.75), (12, 20, 0.5)])
def test_patch_mask_hides_the_ratio_on_average(height, width, ratio):
    patch = default_patch_size(height, width)
    torch.manual_seed(0)
    mask = patch_mask(400, height, width, patch, ratio)
    assert mask.shape == (400, 1, height, width) and mask.dtype == torch.bool
    squares = math.ceil(height / patch) * math.ceil(width / patch)
    expected = masked_count(squares, ratio) / squares                 # each square equally likely
    assert abs(expected - ratio) <= 0.5 / squares + 1e-9
    assert mask.float().mean().item() == pytest.approx(expected, abs=0.01)


def test_patch_masks_are_square_patches_different_per_image():
    torch.manual_seed(1)
    mask = patch_mask(64, 28, 28, 4, 0.5)
    grid = mask[:, 0, ::4, ::4]                                       # (64, 7, 7) one value per square
    # Every square is entirely masked or entirely visible, and each image hides exactly 25 of the 49.
    assert torch.equal(grid.repeat_interleave(4, 1).repeat_interleave(4, 2), mask[:, 0])
    assert (grid.flatten(1).sum(1) == masked_count(49, 0.5)).all()
    assert len({tuple(m.flatten().tolist()) for m in grid}) == 64  # a different mask for every image


def test_patch_mask_at_a_border_that_the_patches_do_not_divide():
    torch.manual_seed(2)
    mask = patch_mask(200, 32, 32, 5, 0.5)                             # 7 x 7 squares, the last ones 2 px wide
    assert mask.shape == (200, 1, 32, 32)
    assert mask[:, :, 30:, 30:].float().mean().item() == pytest.approx(masked_count(49, 0.5) / 49, abs=0.08)


def test_random_mask_hides_exactly_the_count_per_row_at_random_places():
    torch.manual_seed(3)
    mask = random_mask(500, 10, 4)
    assert (mask.sum(1) == 4).all()
    assert mask.float().mean(0).sub(0.4).abs().max().item() < 0.08     # every feature as likely
    assert len({tuple(m.tolist()) for m in mask}) > 150                # C(10, 4) = 210 possible masks


def test_masked_count_rounds_half_up_and_keeps_one():
    assert masked_count(49, 0.5) == 25 and masked_count(10, 0.25) == 3 and masked_count(10, 0.01) == 1
    assert masked_count(10, 0.0) == 0


# ------------------------------------------------------------------------------------------------------- loss


def naive_masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Loop over every element; an image mask (B, 1, H, W) covers all channels."""
    p, t, m = prediction.double().tolist(), target.double().tolist(), mask.tolist()
    total, count = 0.0, 0
    if prediction.ndim == 2:
        for i in range(len(p)):
            for j in range(len(p[i])):
                if m[i][j]:
                    total, count = total + (p[i][j] - t[i][j]) ** 2, count + 1
        return total / count
    for i in range(len(p)):
        for c in range(len(p[i])):
            for y in range(len(p[i][c])):
                for x in range(len(p[i][c][y])):
                    if m[i][0][y][x]:
                        total, count = total + (p[i][c][y][x] - t[i][c][y][x]) ** 2, count + 1
    return total / count


def test_masked_mse_matches_a_loop():
    g = torch.Generator().manual_seed(4)
    prediction, target = torch.randn(3, 2, 5, 5, generator=g), torch.randn(3, 2, 5, 5, generator=g)
    mask = torch.rand(3, 1, 5, 5, generator=g) < 0.4
    assert masked_mse(prediction, target, mask).item() == pytest.approx(naive_masked_mse(prediction, target, mask))
    rows, row_target = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    row_mask = torch.rand(4, 6, generator=g) < 0.5
    assert masked_mse(rows, row_target, row_mask).item() == pytest.approx(naive_masked_mse(rows, row_target, row_mask))
    assert masked_mse(rows, row_target).item() == pytest.approx(((rows - row_target) ** 2).mean().item())


def test_image_loss_counts_the_masked_pixels_of_the_view():
    method = image_method(augment=False)
    seen: dict = {}
    record(method.backbone, seen, "corrupted", inputs=True)
    record(method.decoder, seen, "prediction")
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(7)
    out = method(x, torch.arange(4))
    torch.manual_seed(7)
    mask = method.mask(x)                                              # the draw the method made
    assert method.patch_size == 2 and 0.3 < mask.float().mean().item() < 0.7
    # The encoder saw the channel means on the hidden patches and the image elsewhere.
    mean = method.backbone.normalize.mean
    assert torch.equal(seen["corrupted"], torch.where(mask, mean, x))
    target = (x - mean) / method.backbone.normalize.std
    assert out.loss.item() == pytest.approx(naive_masked_mse(seen["prediction"], target, mask), rel=1e-5)
    assert out.logs["mse_visible"] == pytest.approx(naive_masked_mse(seen["prediction"], target, ~mask), rel=1e-5)


def test_image_loss_on_all_pixels():
    method = image_method(augment=False, masked_only=False)
    seen: dict = {}
    record(method.decoder, seen, "prediction")
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(6))
    out = method(x, torch.arange(3))
    target = (x - method.backbone.normalize.mean) / method.backbone.normalize.std
    assert out.loss.item() == pytest.approx(((seen["prediction"] - target) ** 2).mean().item(), rel=1e-5)


def test_the_target_is_the_augmented_view():
    method = image_method(augment=True, masked_only=False)
    seen: dict = {}
    record(method.decoder, seen, "prediction")
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(8))
    torch.manual_seed(9)
    out = method(x, torch.arange(3))
    torch.manual_seed(9)
    v = method.views(x)
    assert not torch.allclose(v, x)
    target = (v - method.backbone.normalize.mean) / method.backbone.normalize.std
    assert out.loss.item() == pytest.approx(((seen["prediction"] - target) ** 2).mean().item(), rel=1e-5)


@pytest.mark.parametrize("fill", ["mean", "swap"])
def test_table_loss_counts_the_masked_features_of_the_clean_row(fill):
    method = table_method(augment=False, table_fill=fill, mask_ratio=0.4)
    seen: dict = {}
    record(method.backbone, seen, "corrupted", inputs=True)
    record(method.decoder, seen, "prediction")
    x = torch.randn(6, 7, generator=torch.Generator().manual_seed(10)) * 3
    torch.manual_seed(11)
    out = method(x, torch.arange(6))
    torch.manual_seed(11)
    mask = method.mask(x)
    assert (mask.sum(1) == 3).all()                                     # round(0.4 * 7) features per row
    corrupted = seen["corrupted"]
    assert torch.equal(corrupted[~mask], x[~mask])
    if fill == "mean":
        assert torch.equal(corrupted, torch.where(mask, method.backbone.normalize.mean, x))
    else:  # every hidden value comes from the same feature of some row of the batch
        for i, j in mask.nonzero().tolist():
            assert (x[:, j] == corrupted[i, j]).any()
    target = (x - method.backbone.normalize.mean) / method.backbone.normalize.std
    assert out.loss.item() == pytest.approx(naive_masked_mse(seen["prediction"], target, mask), rel=1e-5)


def test_table_target_stays_clean_when_augmenting():
    method = table_method(augment=True, masked_only=False)
    seen: dict = {}
    record(method.decoder, seen, "prediction")
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(12))
    out = method(x, torch.arange(5))
    target = (x - method.backbone.normalize.mean) / method.backbone.normalize.std
    assert out.loss.item() == pytest.approx(((seen["prediction"] - target) ** 2).mean().item(), rel=1e-5)


def test_loss_decreases_on_a_tiny_set():
    method = image_method(shape=(1, 8, 8), augment=False)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(13))
    x[:8, :, :4] = 1.0                                                   # two kinds of image: learnable
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-2)
    torch.manual_seed(0)
    losses = []
    for _ in range(25):
        out = method(x, torch.arange(16))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert sum(losses[-3:]) < 0.6 * sum(losses[:3]), losses


# --------------------------------------------------------------------------------------------------- decoders


@pytest.mark.parametrize(
    "shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 84, 84), (1, 16, 24), (2, 5, 5), (1, 2, 2), (3, 64, 32)]
)
def test_decoder_gives_the_input_shape(shape):
    decoder = ConvDecoder(20, shape, width=4)
    assert decoder(torch.randn(2, 20)).shape == (2, *shape)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_method_reconstructs_at_the_input_shape(shape):
    method = image_method(shape)
    seen: dict = {}
    record(method.decoder, seen, "prediction")
    method(torch.rand(2, *shape), torch.arange(2))
    assert seen["prediction"].shape == (2, *shape)
    assert method.patch_size == {8: 2, 28: 4, 32: 5}[shape[1]]


def test_table_decoder_gives_the_row_width():
    method = table_method(d=9)
    seen: dict = {}
    record(method.decoder, seen, "prediction")
    method(torch.randn(4, 9), torch.arange(4))
    assert seen["prediction"].shape == (4, 9)


# ---------------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "options,message",
    [({"mask_ratio": 1.0}, "mask_ratio takes a number >= 0 and < 1"),
     ({"table_fill": "zero"}, "table_fill takes one of: mean, swap"),
     ({"patch_size": 0}, "patch_size takes null or an integer >= 1"),
     ({"decoder_width": 0}, "decoder_width takes an integer >= 1")],
)
def test_bad_options_are_refused(options, message):
    assert message in option_error("reconstruction", **options)


@pytest.mark.parametrize("options,message", [({"mask_ratio": 0.0}, "hides nothing"),
                                             ({"patch_size": 99}, "patch_size must be in [1, 12]")])
def test_options_that_need_the_images_are_refused_by_the_method(options, message):
    with pytest.raises(SelfmetaError) as info:
        image_method(**options)
    assert message in str(info.value)


def test_plain_autoencoder_with_no_masking():
    method = image_method(mask_ratio=0.0, masked_only=False, augment=False)
    seen: dict = {}
    record(method.backbone, seen, "corrupted", inputs=True)
    x = torch.rand(2, 3, 12, 12)
    method(x, torch.arange(2))
    assert torch.equal(seen["corrupted"], x)


# ----------------------------------------------------------------------------- per-item reconstruction error


@pytest.mark.parametrize("build, x", [(image_method, torch.rand(4, 3, 12, 12)), (table_method, torch.randn(5, 7))])
def test_reconstruction_error_is_each_items_mse_of_the_unmasked_input(build, x):
    method = build().eval()
    errors = method.reconstruction_error(x)
    assert errors.shape == (len(x),)
    for i in range(len(x)):                                       # one item at a time, the formula spelled out
        item = x[i : i + 1]
        with torch.no_grad():
            prediction = method.decoder(method.backbone(item))
        target = (item - method.backbone.normalize.mean) / method.backbone.normalize.std
        assert float(errors[i]) == pytest.approx(float(((prediction - target) ** 2).mean()), rel=1e-5)

