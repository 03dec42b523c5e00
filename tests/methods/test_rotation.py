"""RotNet: the rotated batch and its labels against a per-image torch.rot90 loop, square images only, and
the rotation classifier learns on a tiny set."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfmeta.modalities.image import ImageViews
from selfmeta.encoders import Backbone, Normalize
from selfmeta.encoders.models import Conv4
from selfmeta.errors import SelfmetaError
from selfmeta.methods.rotation import Rotation, all_rotations, rotate



def build(shape=(1, 8, 8), width: int = 8, **options) -> Rotation:
    torch.manual_seed(0)
    backbone = Backbone(Normalize(torch.full((1, shape[0], 1, 1), 0.5), torch.full((1, shape[0], 1, 1), 0.25)),
                        Conv4(shape, width=width))
    return Rotation(backbone, ImageViews(shape, hflip=0.0), **options)


def record_backbone_io(method: Rotation) -> dict:
    """Keep what the backbone receives and returns on the next forward."""
    seen: dict = {}

    def hook(module, args, output):
        seen["input"], seen["features"] = args[0].detach(), output.detach()

    method.backbone.register_forward_hook(hook)
    return seen


def test_rotate_matches_a_per_image_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(9, 3, 5, 5, generator=g)
    k = torch.randint(0, 4, (9,), generator=g)
    expected = torch.stack([torch.rot90(x[i], int(k[i]), dims=(1, 2)) for i in range(9)])
    assert torch.equal(rotate(x, k), expected)


def test_rotate_is_counter_clockwise():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert rotate(x, torch.tensor([1])).flatten().tolist() == [2.0, 4.0, 1.0, 3.0]
    assert rotate(x, torch.tensor([2])).flatten().tolist() == [4.0, 3.0, 2.0, 1.0]


def test_all_rotations_match_a_per_image_loop():
    x = torch.rand(4, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    turned, labels = all_rotations(x)
    expected, expected_labels = [], []
    for r in range(4):
        for i in range(4):
            expected.append(torch.rot90(x[i], r, dims=(1, 2)))
            expected_labels.append(r)
    assert torch.equal(turned, torch.stack(expected))
    assert labels.tolist() == expected_labels and labels.dtype == torch.int64


def test_all_mode_classifies_every_rotation_with_its_label():
    method = build(augment=False)
    seen = record_backbone_io(method)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    out = method(x, torch.arange(5))
    inputs = torch.stack([torch.rot90(x[i], r, dims=(1, 2)) for r in range(4) for i in range(5)])
    labels = torch.tensor([r for r in range(4) for _ in range(5)])
    assert torch.equal(seen["input"], inputs)
    expected = F.cross_entropy(method.classifier(seen["features"]), labels)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert 0 <= out.logs["rot_acc"] <= 1


def test_random_mode_rotates_each_image_once():
    method = build(rotations="random", augment=False)
    seen = record_backbone_io(method)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(5)
    out = method(x, torch.arange(6))
    torch.manual_seed(5)
    k = torch.randint(4, (6,))                       # the draw the method makes
    assert len(set(k.tolist())) > 1
    assert torch.equal(seen["input"], torch.stack([torch.rot90(x[i], int(k[i]), dims=(1, 2)) for i in range(6)]))
    expected = F.cross_entropy(method.classifier(seen["features"]), k)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_views_are_rotated_when_augmenting():
    method = build(augment=True)
    seen = record_backbone_io(method)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(6)
    method(x, torch.arange(3))
    torch.manual_seed(6)
    v = method.views(x)
    assert not torch.equal(v, x)
    assert torch.allclose(seen["input"], torch.cat([torch.rot90(v, r, dims=(2, 3)) for r in range(4)]))


def test_non_square_images_are_refused_at_construction():
    with pytest.raises(SelfmetaError, match="square images.*8x12"):
        build(shape=(1, 8, 12))


def test_unknown_rotation_mode_is_refused():
    from method_testing import option_error

    assert "option rotations takes one of: all, random, got 'some'" in option_error("rotation", rotations="some")


@pytest.mark.parametrize("rotations", ["all", "random"])
def test_loss_decreases_on_a_tiny_set(rotations):
    # Digit-like images with a clear top: a bright bar in the upper rows over faint noise.
    g = torch.Generator().manual_seed(0)
    x = 0.2 * torch.rand(16, 1, 8, 8, generator=g)
    x[:, :, 1:3, 1:7] = 1.0
    x[:, :, 3:7, 2] = 0.8
    method = build(rotations=rotations, augment=False, width=16)
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-2)
    torch.manual_seed(0)
    losses = []
    for _ in range(30):
        out = method(x, torch.arange(16))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.3 * first, losses
    assert out.logs["rot_acc"] > 0.9  # chance is 0.25
