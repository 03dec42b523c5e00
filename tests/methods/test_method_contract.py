"""Every registered method on every registered modality: a few training steps give a finite loss and change
the parameters where the method takes the modality; elsewhere a clear error names the methods that do.
The hooks and outputs follow the contract. New methods and new modalities get these tests by registering
(a new modality adds its tiny example below; a test fails until it does)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfmeta.data.dataset import Dataset
from selfmeta.engine import TrainConfig, train
from selfmeta.engine.model import build_method, fit_preprocessor
from selfmeta.errors import SelfmetaError
from selfmeta.methods import METHODS, StepOutput
from selfmeta.modalities import MODALITIES


def _image(g):
    return torch.randint(0, 256, (96, 1, 16, 16), generator=g, dtype=torch.uint8)


def _table(g):
    return torch.randn(96, 12, generator=g)


def _series(g):
    x = torch.randn(96, 2, 40, generator=g).cumsum(-1)
    x[::7, :, 30:] = float("nan")                                # some shorter series, padded with NaN
    return x


WORDS = np.array("free prize call now win cash txt the cat sat on mat see you at home ok lol later meeting".split())


def _text(g):
    """Raw documents of 3 to 12 random words: the tokenizer is fitted on them (``fit_preprocessor``)."""
    lengths = torch.randint(3, 13, (96,), generator=g).tolist()
    words = torch.randint(len(WORDS), (96, 12), generator=g).numpy()
    return np.array([" ".join(WORDS[w[:n]]) for w, n in zip(words, lengths)], dtype=object)


def _record(g):
    """Records of a number, a category, a text and an image column, each missing somewhere."""
    from selfmeta.data.records import RecordTable

    n = 96
    number = torch.randn(n, generator=g).double().numpy()
    number[::9] = np.nan
    category = np.array([None if i % 11 == 0 else "xyz"[i % 3] for i in range(n)], dtype=object)
    text = _text(g)
    text[::5] = None
    folder = Path(tempfile.mkdtemp(prefix="selfmeta-records-"))
    image = np.empty(n, dtype=object)
    for i in range(n):
        if i % 4:
            path = folder / f"{i}.png"
            Image.fromarray(torch.randint(0, 256, (6, 6, 3), generator=g, dtype=torch.uint8).numpy()).save(path)
            image[i] = str(path)
    return RecordTable({"price": number, "colour": category, "review": text, "photo": image},
                       {"price": "number", "colour": "category", "review": "text", "photo": "image"})


def _interactions(g):
    """Users' sequences of 3 to 12 item IDs out of 30 (each user's interests: a run of neighbouring items)."""
    lengths = torch.randint(3, 13, (96,), generator=g).tolist()
    starts = torch.randint(0, 20, (96,), generator=g).tolist()
    raw = np.empty(96, dtype=object)
    raw[:] = [np.array([f"m{s + (j * 7) % 10}" for j in range(n)]) for s, n in zip(starts, lengths)]
    return raw


EXAMPLES = {"image": _image, "table": _table, "series": _series, "text": _text, "record": _record,
            "interactions": _interactions}
ENCODERS = {"image": "conv4", "table": "mlp", "series": "resnet1d", "text": "fasttext", "record": "fusion",
            "interactions": "sasrec"}
VIEWS = {"image": {"hflip": 0.0}}


def tiny(modality: str) -> Dataset:
    """96 items of 4 classes; raw items (text) prepared by a preprocessor fitted on them, as the trainer does."""
    g = torch.Generator().manual_seed(0)
    items = EXAMPLES[modality](g)
    y, classes = torch.arange(96) % 4, ["a", "b", "c", "d"]
    if not isinstance(items, torch.Tensor):
        data = Dataset(None, y, classes, modality, "tiny", raw=items)
        options = {"vocab_size": 64, "max_length": 16, **({"image_size": 8} if modality == "record" else {})}
        options = {k: v for k, v in options.items() if k in data.spec.preprocessor.options}
        return fit_preprocessor(TrainConfig(input_options=options), data)
    return Dataset(items, y, classes, modality, "tiny")


def config(name: str, modality: str, **changes) -> TrainConfig:
    values = dict(method=name, encoder="ts2vec" if name == "ts2vec" else ENCODERS[modality], epochs=2,
                  batch_size=32, log_every=1, device="cpu", view_options=VIEWS.get(modality, {}))
    values.update(changes)
    return TrainConfig(**values)


def test_every_modality_has_an_example():
    assert sorted(EXAMPLES) == MODALITIES.names()


@pytest.mark.parametrize("modality", MODALITIES.names())
@pytest.mark.parametrize("name", METHODS.names())
def test_method_trains_a_few_steps(name, modality):
    cls = METHODS.get(name)
    data = tiny(modality)
    if not cls.takes(modality):
        with pytest.raises(SelfmetaError, match=f"does not take {modality} data; use one of: .*simclr"):
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
    features = result.method.embed(data.spec.to_model(data.take(torch.arange(5)), "cpu"))
    assert features.shape == (5, result.method.backbone.num_features) and torch.isfinite(features).all()


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name):
    cls = METHODS.get(name)
    assert cls.description and cls.paper, "cite the paper and describe the method for `selfmeta list`"
    takes = [m for m in MODALITIES.names() if cls.takes(m)]
    assert takes and (cls.modalities is None or set(cls.modalities) <= set(MODALITIES.names()))
    data = tiny(takes[0])
    method = build_method(config(name, takes[0]), data)
    x = data.spec.to_model(data.take(torch.arange(8)), "cpu")
    method.on_epoch_start(0, data)
    out = method(x, torch.arange(8))
    assert isinstance(out, StepOutput) and out.loss.ndim == 0 and out.loss.requires_grad
    assert all(isinstance(v, float) for v in out.logs.values())
    method.on_step_end(0.5)


def test_unknown_method_option_lists_valid_ones():
    with pytest.raises(SelfmetaError, match="valid: .*temperature"):
        build_method(config("simclr", "table", method_options={"temprature": 0.1}), tiny("table"))
