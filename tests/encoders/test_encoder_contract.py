"""The encoder contract, for every registered encoder and input shape."""

from __future__ import annotations

import pytest
import torch

from selfmeta.encoders import ENCODERS, Backbone, Encoder, Normalize, build_encoder, to_unit
from selfmeta.errors import SelfmetaError

SHAPES = {
    "grey28": (1, 28, 28),
    "rgb32": (3, 32, 32),
    "grey8": (1, 8, 8),
    "table20": (20,),
}


def batch_size(name: str) -> int:
    return 2 if name == "resnet18" else 4


@pytest.mark.parametrize("shape_id", list(SHAPES))
@pytest.mark.parametrize("name", ENCODERS.names())
def test_encoder_contract(name, shape_id):
    shape = SHAPES[shape_id]
    modality = "image" if len(shape) == 3 else "table"
    cls = ENCODERS.get(name)
    if modality not in cls.modalities:
        with pytest.raises(SelfmetaError, match=f"does not take {modality} data") as info:
            build_encoder(name, shape)
        valid = [n for n in ENCODERS.names() if modality in ENCODERS.get(n).modalities]
        assert valid and all(v in str(info.value) for v in valid)
        pytest.skip(f"{name} does not take {modality} data (checked that it says so)")

    torch.manual_seed(0)
    encoder = build_encoder(name, shape)
    assert isinstance(encoder, Encoder) and isinstance(encoder, cls)
    assert isinstance(encoder.num_features, int) and encoder.num_features > 0
    b = batch_size(name)
    x = torch.randn(b, *shape)

    features = encoder.forward_features(x)
    assert features.shape == (b, encoder.num_features)
    assert bool(torch.isfinite(features).all())

    # Every parameter gets a gradient.
    loss = (features * torch.randn_like(features)).sum()
    loss.backward()
    for pname, p in encoder.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert bool(torch.isfinite(p.grad).all()), f"{name}: non-finite gradient for {pname}"
        assert float(p.grad.abs().sum()) > 0, f"{name}: zero gradient for {pname}"


@pytest.mark.parametrize("name", ENCODERS.names())
def test_encoder_has_description(name):
    cls = ENCODERS.get(name)
    assert cls.description
    assert set(cls.modalities) <= {"image", "table"} and cls.modalities


def test_conv4_standard_feature_sizes():
    assert build_encoder("conv4", (1, 28, 28)).num_features == 64
    assert build_encoder("conv4", (3, 84, 84)).num_features == 1600
    assert build_encoder("conv4", (1, 8, 8)).num_features == 64  # pooling stops at 1 pixel
    params = sum(p.numel() for p in build_encoder("conv4", (1, 28, 28)).parameters())
    # 4 convs 3x3 (1->64, then 64->64, no bias) + 4 batch norms (64 weights, 64 biases).
    assert params == 9 * 64 + 3 * 9 * 64 * 64 + 4 * 128


def test_resnet18_features_and_size():
    encoder = build_encoder("resnet18", (3, 32, 32))
    assert encoder.num_features == 512
    params = sum(p.numel() for p in encoder.parameters())
    assert 11_000_000 < params < 11_300_000  # ResNet-18 without its fc layer: about 11.2 M


def test_mlp_options_and_features():
    encoder = build_encoder("mlp", (20,), widths=(32, 16))
    assert encoder.num_features == 16
    assert build_encoder("mlp", (1, 8, 8)).num_features == 256
    with pytest.raises(SelfmetaError, match="unknown option 'depth' for encoder 'mlp'; valid: widths"):
        build_encoder("mlp", (20,), depth=3)
    with pytest.raises(SelfmetaError, match="encoder 'mlp' option widths takes a list of integers >= 1, got"):
        build_encoder("mlp", (20,), widths=[32, 0])


def test_unknown_encoder():
    with pytest.raises(SelfmetaError, match="unknown encoder 'conv5'") as info:
        build_encoder("conv5", (1, 28, 28))
    assert "conv4, mlp, resnet18" in str(info.value)


def test_backbone_normalizes_with_training_statistics():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    norm = Normalize.fit(x, "image")
    unit = to_unit(x)
    assert unit.dtype == torch.float32 and float(unit.max()) <= 1
    z = norm(unit)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=1e-4)
    encoder = build_encoder("conv4", (3, 8, 8))
    backbone = Backbone(norm, encoder).eval()
    assert backbone.num_features == 64
    with torch.no_grad():
        assert torch.allclose(backbone(unit[:4]), encoder.forward_features(z[:4]))
