"""The encoder contract, for every registered encoder and input shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfmeta.data.records import RecordTable
from selfmeta.encoders import ENCODERS, Backbone, Encoder, build_encoder, to_unit
from selfmeta.errors import SelfmetaError
from selfmeta.modalities import MODALITIES, get_modality

SHAPES = {  # id: (modality, item shape)
    "grey28": ("image", (1, 28, 28)),
    "rgb32": ("image", (3, 32, 32)),
    "grey8": ("image", (1, 8, 8)),
    "table20": ("table", (20,)),
    "series3x50": ("series", (3, 50)),
    "series1x33": ("series", (1, 33)),
    "text16": ("text", (16,)),
    "record18": ("record", (18,)),   # a number, a category and a text column of 16 tokens
    "interactions16": ("interactions", (16,)),
}

DOCUMENTS = np.array(["the cat sat on the mat", "a dog ran in the park, fast", "cats and dogs", "free prize: call now!",
                      "see you at the park tomorrow", "the mat is red"], dtype=object)

# Records: every column missing in one of the first four rows, so that each "missing" token gets a gradient.
RAW = {"text": DOCUMENTS, "record": RecordTable(
    {"price": np.array([np.nan, 2.0, 3.5, 1.0, 9.0, 4.0]),
     "colour": np.array(["red", None, "blue", "red", "green", "blue"], dtype=object),
     "review": np.array(list(DOCUMENTS[:2]) + [None] + list(DOCUMENTS[3:]), dtype=object)},
    {"price": "number", "colour": "category", "review": "text"}),
    "interactions": np.array([np.array(list(s)) for s in ("abcde", "bcd", "aaxyz", "cab", "xyzzy", "edcba")] + [None],
                             dtype=object)[:-1]}


def sample(modality: str, shape: tuple[int, ...], b: int) -> tuple[torch.Tensor, dict]:
    """A batch of model inputs of ``shape`` (b items) and the encoder inputs the modality's preprocessor gives."""
    spec = get_modality(modality)
    if spec.preprocessor is None:
        x = torch.randn(b, *shape)
        if spec.missing_values:
            x[0, ..., shape[-1] // 2 :] = float("nan")               # a shorter series, padded with NaN
        return x, {}
    options = {k: v for k, v in {"vocab_size": 60, "max_length": 16, "min_frequency": 1}.items()
               if k in spec.preprocessor.options}
    preprocessor = spec.preprocessor(**options).fit(RAW[modality])
    x = spec.to_model(preprocessor(RAW[modality][:b]), "cpu")
    assert x.shape[1:] == shape
    return x, preprocessor.encoder_inputs()


def batch_size(name: str) -> int:
    return 2 if name == "resnet18" else 4


def test_every_modality_has_shapes():
    assert {m for m, _ in SHAPES.values()} == set(MODALITIES.names())


@pytest.mark.parametrize("shape_id", list(SHAPES))
@pytest.mark.parametrize("name", ENCODERS.names())
def test_encoder_contract(name, shape_id):
    modality, shape = SHAPES[shape_id]
    cls = ENCODERS.get(name)
    if modality not in cls.modalities:
        with pytest.raises(SelfmetaError, match=f"does not take {modality} data") as info:
            build_encoder(name, shape, modality)
        valid = [n for n in ENCODERS.names() if modality in ENCODERS.get(n).modalities]
        assert valid and all(v in str(info.value) for v in valid)
        pytest.skip(f"{name} does not take {modality} data (checked that it says so)")

    torch.manual_seed(0)
    b = batch_size(name)
    x, inputs = sample(modality, shape, b)
    encoder = build_encoder(name, shape, modality, inputs)
    assert isinstance(encoder, Encoder) and isinstance(encoder, cls)
    assert isinstance(encoder.num_features, int) and encoder.num_features > 0

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
    assert set(cls.modalities) <= set(MODALITIES.names()) and cls.modalities


def test_conv4_standard_feature_sizes():
    assert build_encoder("conv4", (1, 28, 28), "image").num_features == 64
    assert build_encoder("conv4", (3, 84, 84), "image").num_features == 1600
    assert build_encoder("conv4", (1, 8, 8), "image").num_features == 64  # pooling stops at 1 pixel
    params = sum(p.numel() for p in build_encoder("conv4", (1, 28, 28), "image").parameters())
    # 4 convs 3x3 (1->64, then 64->64, no bias) + 4 batch norms (64 weights, 64 biases).
    assert params == 9 * 64 + 3 * 9 * 64 * 64 + 4 * 128


def test_resnet18_features_and_size():
    encoder = build_encoder("resnet18", (3, 32, 32), "image")
    assert encoder.num_features == 512
    params = sum(p.numel() for p in encoder.parameters())
    assert 11_000_000 < params < 11_300_000  # ResNet-18 without its fc layer: about 11.2 M


def test_mlp_options_and_features():
    encoder = build_encoder("mlp", (20,), "table", widths=(32, 16))
    assert encoder.num_features == 16
    assert build_encoder("mlp", (1, 8, 8), "image").num_features == 256
    with pytest.raises(SelfmetaError, match="unknown option 'depth' for encoder 'mlp'; valid: widths"):
        build_encoder("mlp", (20,), "table", depth=3)
    with pytest.raises(SelfmetaError, match="encoder 'mlp' option widths takes a list of integers >= 1, got"):
        build_encoder("mlp", (20,), "table", widths=[32, 0])


def test_unknown_encoder():
    with pytest.raises(SelfmetaError, match="unknown encoder 'conv5'") as info:
        build_encoder("conv5", (1, 28, 28), "image")
    assert "conv4, fasttext, fusion, mlp, resnet18" in str(info.value)


def test_backbone_normalizes_with_training_statistics():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    norm = get_modality("image").normalizer(x)
    unit = to_unit(x)
    assert unit.dtype == torch.float32 and float(unit.max()) <= 1
    z = norm(unit)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=1e-4)
    encoder = build_encoder("conv4", (3, 8, 8), "image")
    backbone = Backbone(norm, encoder).eval()
    assert backbone.num_features == 64
    with torch.no_grad():
        assert torch.allclose(backbone(unit[:4]), encoder.forward_features(z[:4]))
