"""Every registered method, on images and on tables: a few training steps give a finite loss and change
the parameters; image-only methods refuse tables with a clear error; the hooks and outputs follow the
contract. New methods get these tests by registering."""

from __future__ import annotations

import pytest
import torch

from selfmeta.data.dataset import Dataset
from selfmeta.engine import TrainConfig, train
from selfmeta.engine.model import build_method
from selfmeta.errors import SelfmetaError
from selfmeta.methods import METHODS, StepOutput



def tiny(modality: str) -> Dataset:
    g = torch.Generator().manual_seed(0)
    if modality == "image":
        x = torch.randint(0, 256, (96, 1, 16, 16), generator=g, dtype=torch.uint8)
    else:
        x = torch.randn(96, 12, generator=g)
    return Dataset(x, torch.arange(96) % 4, ["a", "b", "c", "d"], modality, "tiny")


def config(name: str, modality: str, **changes) -> TrainConfig:
    values = dict(method=name, encoder="conv4" if modality == "image" else "mlp", epochs=2, batch_size=32,
                  log_every=1, device="cpu", view_options={"hflip": 0.0} if modality == "image" else {})
    values.update(changes)
    return TrainConfig(**values)


@pytest.mark.parametrize("modality", ["image", "table"])
@pytest.mark.parametrize("name", METHODS.names())
def test_method_trains_a_few_steps(name, modality):
    cls = METHODS.get(name)
    data = tiny(modality)
    if modality not in cls.modalities:
        with pytest.raises(SelfmetaError, match=f"does not take {modality} data"):
            train(config(name, modality), data, progress=False)
        return
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in build_method(config(name, modality), data).state_dict().items()}
    result = train(config(name, modality), data, progress=False)
    assert result.steps == 2 * (96 // 32)
    losses = [r["loss"] for r in result.history]
    assert len(losses) == result.steps and all(torch.isfinite(torch.tensor(losses)))
    after = result.method.state_dict()
    changed = [k for k, v in after.items() if v.is_floating_point() and not torch.equal(v, before[k])]
    encoder_params = [k for k, _ in result.method.backbone.encoder.named_parameters()]
    assert any(k.startswith("backbone.encoder.") for k in changed), "the encoder did not learn"
    assert all(f"backbone.encoder.{k}" in changed for k in encoder_params if "weight" in k), "some encoder weights froze"
    features = result.method.embed(data.x[:5].float() / 255 if modality == "image" else data.x[:5])
    assert features.shape == (5, result.method.backbone.num_features) and torch.isfinite(features).all()


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name):
    cls = METHODS.get(name)
    assert cls.description and cls.paper, "cite the paper and describe the method for `selfmeta list`"
    assert set(cls.modalities) <= {"image", "table"} and cls.modalities
    modality = cls.modalities[0]
    data = tiny(modality)
    method = build_method(config(name, modality), data)
    x = data.x[:8].float() / 255 if modality == "image" else data.x[:8]
    method.on_epoch_start(0, data)
    out = method(x, torch.arange(8))
    assert isinstance(out, StepOutput) and out.loss.ndim == 0 and out.loss.requires_grad
    assert all(isinstance(v, float) for v in out.logs.values())
    method.on_step_end(0.5)


def test_unknown_method_option_lists_valid_ones():
    with pytest.raises(SelfmetaError, match="valid: .*temperature"):
        build_method(config("simclr", "table", method_options={"temprature": 0.1}), tiny("table"))
