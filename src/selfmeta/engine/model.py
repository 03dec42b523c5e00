"""Building a method for a data set, and rebuilding a saved backbone to embed new data."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from selfmeta.data.dataset import Dataset
from selfmeta.data.episodes import EpisodeSpec
from selfmeta.encoders import Backbone, build_encoder
from selfmeta.engine.checkpoint import WEIGHTS, load_weights
from selfmeta.engine.config import TrainConfig
from selfmeta.errors import SelfmetaError
from selfmeta.meta import METALEARNERS
from selfmeta.methods import BUILT_BY_ENGINE, METHODS, Method
from selfmeta.modalities import MODALITIES, get_modality
from selfmeta.options import check_options

log = logging.getLogger(__name__)

NORMALIZATION_SAMPLE = 20_000  # items the normalization statistics are computed on (the first ones)


def build_method(cfg: TrainConfig, data: Dataset) -> Method:
    """Normalization fitted on ``data``, the encoder, the modality's views, the method and its options.

    With ``cfg.tasks`` set (episodic training) the method is a meta-learner, built with the episode shape.
    """
    registry = METALEARNERS if cfg.tasks is not None else METHODS
    method_cls = registry.get(cfg.method)
    if not method_cls.takes(data.modality):
        valid = [n for n in registry.names() if registry.get(n).takes(data.modality)]
        raise SelfmetaError(f"{registry.kind} {cfg.method!r} does not take {data.modality} data; use one of: "
                            f"{', '.join(valid)}")
    method_options = check_options(f"{registry.kind} {cfg.method!r}", method_cls, cfg.method_options, BUILT_BY_ENGINE)
    modality = data.spec
    inputs = data.preprocessor.encoder_inputs() if data.preprocessor is not None else {}
    encoder = build_encoder(cfg.encoder, data.input_shape, data.modality, inputs, **cfg.encoder_options)
    normalize = modality.normalizer(data.take(torch.arange(min(len(data), NORMALIZATION_SAMPLE))))
    views = modality.build_views(data.input_shape, normalize, cfg.view_options, inputs)
    if cfg.tasks is not None:
        spec = EpisodeSpec(cfg.ways, cfg.shots, cfg.queries)
        return method_cls(Backbone(normalize, encoder), views, spec, **method_options)
    return method_cls(Backbone(normalize, encoder), views, **method_options)


RULE_SAMPLE = 2_000  # items the data-adapted view defaults look at (the first ones)


def adapt_views(cfg: TrainConfig, data: Dataset) -> tuple[TrainConfig, dict[str, Any]]:
    """``cfg`` with the view options its data's rule chooses (``Views.data_defaults``: e.g. no flip for
    symbols) for those the user did not set, and what was chosen and why ({} where no rule applies)."""
    chosen, rule = data.spec.views.data_defaults(data.take(torch.arange(min(len(data), RULE_SAMPLE))))
    chosen = {k: v for k, v in chosen.items() if k not in cfg.view_options}
    if not chosen:
        return cfg, {}
    log.info("views for this data (%s): %s", rule, ", ".join(f"{k}={v}" for k, v in chosen.items()))
    return replace(cfg, view_options={**cfg.view_options, **chosen}), {"rule": rule, "options": chosen}


def fit_preprocessor(cfg: TrainConfig, data: Dataset, saved: Path | None = None) -> Dataset:
    """``data`` (a training split) prepared by its modality's preprocessor, fitted on it with the run's
    ``input.*`` options (text: a tokenizer trained on its documents), or read from ``saved`` (a resumed
    run's copy); ``data`` itself where the modality has none (``input.*`` options are then an error) or
    where it is prepared already."""
    cls = data.spec.preprocessor
    if cls is None:
        if cfg.input_options:
            raise SelfmetaError(f"input.{next(iter(cfg.input_options))}: {data.modality} data has no preprocessor "
                                f"to set options of (input.* options are for text)")
        return data
    if data.preprocessor is not None:
        return data
    if data.raw is None:
        raise SelfmetaError(f"{data.name}: {data.modality} data must come as raw items for its {cls.kind} to fit")
    if saved is not None and saved.is_file():
        return prepare(data, cls.from_json(saved.read_text(encoding="utf-8", errors="replace"), str(saved)))
    preprocessor = cls(**check_options(f"{data.modality} {cls.kind}", cls, cfg.input_options))
    preprocessor = preprocessor.fit(data.raw, info=data.info) if data.info is not None else preprocessor.fit(data.raw)
    return prepare(data, preprocessor)


def prepare(data: Dataset, preprocessor: Any) -> Dataset:
    """``data`` with its items made from its raw items by ``preprocessor`` (unchanged where they were made by
    an equal one already)."""
    if data.x is not None and data.preprocessor is not None and (
            data.preprocessor is preprocessor or data.preprocessor.to_json() == preprocessor.to_json()):
        return data
    if data.raw is None:
        raise SelfmetaError(f"{data.name}: {data.modality} items without their raw form cannot be prepared again")
    return Dataset(preprocessor(data.raw), data.y, data.classes, data.modality, data.name, data.raw, preprocessor,
                   data.keys, data.info)


def describe(cfg: TrainConfig, data: Dataset) -> dict[str, Any]:
    """What ``load_backbone`` needs to rebuild the backbone, stored in the weights file's metadata; with the
    preprocessor (text: the tokenizer) where the modality has one, so that the weights file is complete."""
    description = {
        "encoder": cfg.encoder,
        "encoder_options": cfg.encoder_options,
        "input_shape": list(data.input_shape),
        "modality": data.modality,
        "method": cfg.method,
        "tasks": cfg.tasks,
        "classes": data.classes,
    }
    if data.preprocessor is not None:
        description["preprocessor"] = data.preprocessor.to_json()
    return description


def saved_preprocessor(description: dict[str, Any], where: str | Path) -> Any:
    """The preprocessor a description holds (None for modalities without one)."""
    cls = get_modality(description["modality"]).preprocessor
    if cls is None:
        return None
    if not isinstance(description.get("preprocessor"), str):
        raise SelfmetaError(f"{where}: the {description['modality']} model has no saved {cls.kind}")
    return cls.from_json(description["preprocessor"], str(where))


def check_description(description: Any, path: str | Path) -> dict[str, Any]:
    """The description of a weights file, checked: a dict whose keys have the types ``describe`` writes."""
    types = {"encoder": str, "encoder_options": dict, "input_shape": list, "modality": str, "method": str}
    if not isinstance(description, dict):
        raise SelfmetaError(f"{path}: not a selfmeta weights file (its description is not a table)")
    for key, kind in types.items():
        if not isinstance(description.get(key), kind):
            raise SelfmetaError(f"{path}: not a selfmeta weights file (its description has no valid {key!r})")
    shape = description["input_shape"]
    if not (1 <= len(shape) <= 3 and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise SelfmetaError(f"{path}: not a selfmeta weights file (input_shape {shape!r})")
    if description["modality"] not in MODALITIES:
        raise SelfmetaError(f"{path}: unknown modality {description['modality']!r}; valid: "
                            f"{', '.join(MODALITIES.names())}")
    return description


def placeholder_data(description: dict[str, Any]) -> Dataset:
    """Two items of the described model's shape, modality and preprocessor: the template ``build_method``
    rebuilds a saved method from (every statistic it derives from the data is a buffer the saved state
    overwrites)."""
    spec = get_modality(description["modality"])
    items = spec.placeholder_items(tuple(description["input_shape"]))
    return Dataset(items, None, [], description["modality"], "saved", None, saved_preprocessor(description, "the model"))


def rebuild_backbone(description: dict[str, Any], state: dict[str, torch.Tensor]) -> Backbone:
    shape = tuple(description["input_shape"])
    preprocessor = saved_preprocessor(description, "the weights")
    inputs = preprocessor.encoder_inputs() if preprocessor is not None else {}
    encoder = build_encoder(description["encoder"], shape, description["modality"], inputs,
                            **description["encoder_options"])
    backbone = Backbone(get_modality(description["modality"]).placeholder_normalizer(shape), encoder)
    try:
        backbone.load_state_dict(state)
    except RuntimeError as exc:
        raise SelfmetaError(f"the weights do not fit encoder {description['encoder']!r}: {exc}".splitlines()[0]) from None
    return backbone.eval()


def load_backbone(run_dir: str | Path) -> tuple[Backbone, dict[str, Any]]:
    """The trained backbone of a run directory (or a ``.safetensors`` file) and its description."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / WEIGHTS
        if not path.is_file():
            raise SelfmetaError(f"{run_dir} holds no {WEIGHTS}: is it a finished selfmeta run directory?")
    state, description = load_weights(path)
    description = check_description(description, path)
    # Files saved by SelfSupervised.save also hold the method's own tensors ("method.*"): not the backbone's.
    state = {k: v for k, v in state.items() if not k.startswith("method.")}
    return rebuild_backbone(description, state), description


@torch.no_grad()
def embed(backbone: Backbone, data: Dataset, batch_size: int = 1024, device: str | torch.device = "cpu",
          part: str | None = None) -> torch.Tensor:
    """Frozen features (N, num_features) of every item of ``data``, computed in batches taken by index;
    with ``part``, that part's own embedding (records: a column kind's, ``Encoder.forward_part``)."""
    modality = data.spec
    backbone = backbone.to(device).eval().to(memory_format=modality.layout(True))
    if part is not None and part not in backbone.encoder.parts:
        parts = backbone.encoder.parts
        raise SelfmetaError(f"--part {part}: the model's encoder has " + (
            f"the parts {', '.join(parts)}" if parts else "no parts to embed apart (it takes one kind of input)"))

    def features(x: torch.Tensor) -> torch.Tensor:
        return backbone(x) if part is None else backbone.part(x, part)

    out = [features(modality.to_model(data.take(torch.arange(i, min(i + batch_size, len(data)))), device, True))
           .float().cpu() for i in range(0, len(data), batch_size)]
    return torch.cat(out)


def check_compatible(description: dict[str, Any], data: Dataset) -> Dataset:
    """``data`` as the model described takes it: the same modality, prepared by the model's own
    preprocessor (text: tokenized by the run's tokenizer), items of a shape it fits; else one error line."""
    if description["modality"] != data.modality:
        raise SelfmetaError(f"the model was trained on {description['modality']} data, the data is {data.modality}")
    if data.spec.preprocessor is not None:  # text: tokenized by the model's own tokenizer
        data = prepare(data, saved_preprocessor(description, "the model"))
    if not data.spec.fits(tuple(description["input_shape"]), data.input_shape):
        raise SelfmetaError(
            f"the model was trained on inputs of shape {tuple(description['input_shape'])}, "
            f"the data has {data.input_shape}"
        )
    return data


def load_method(run_dir: str | Path, data: Dataset) -> Method:
    """The whole trained method of a run directory (its heads, decoder, learned rates...), rebuilt from
    ``config.json`` and the checkpoint, in eval mode. ``data`` is only a template: every statistic
    ``build_method`` derives from it is a buffer, overwritten by the checkpoint."""
    from selfmeta.engine.checkpoint import CHECKPOINT, load_checkpoint

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not (run_dir.is_dir() and config_path.is_file() and (run_dir / CHECKPOINT).is_file()):
        raise SelfmetaError(f"{run_dir} holds no config.json and {CHECKPOINT}: is it a selfmeta run directory?")
    values = json.loads(config_path.read_text())["config"]
    if data.spec.preprocessor is not None:  # the run's own preprocessor, so the encoder is built as trained
        _, description = load_backbone(run_dir)
        data = check_compatible(description, data)
    method = build_method(TrainConfig.from_dict(values), data)
    try:
        method.load_state_dict(load_checkpoint(run_dir / CHECKPOINT)["model"])
    except (RuntimeError, KeyError) as exc:
        raise SelfmetaError(f"{run_dir / CHECKPOINT} does not fit its config.json ({exc})".splitlines()[0]) from None
    return method.eval()


def load_learner(run_dir: str | Path, data: Dataset) -> Method | None:
    """The whole trained method of an episodic run (meta-learner with its heads and learned rates), rebuilt
    from ``config.json`` and the checkpoint, in eval mode; None for runs that are not episodic."""
    from selfmeta.engine.checkpoint import CHECKPOINT

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not (run_dir.is_dir() and config_path.is_file() and (run_dir / CHECKPOINT).is_file()):
        return None
    if json.loads(config_path.read_text())["config"].get("tasks") is None:
        return None
    return load_method(run_dir, data)
