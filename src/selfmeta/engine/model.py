"""Building a method for a data set, and rebuilding a saved backbone to embed new data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from selfmeta.data.dataset import Dataset
from selfmeta.data.views import VIEWS
from selfmeta.encoders import Backbone, Normalize, build_encoder, to_unit
from selfmeta.engine.checkpoint import WEIGHTS, load_weights
from selfmeta.engine.config import TrainConfig
from selfmeta.errors import SelfmetaError
from selfmeta.methods import METHODS, Method, method_options


def build_method(cfg: TrainConfig, data: Dataset) -> Method:
    """Normalization fitted on ``data``, the encoder, the modality's views, the method and its options."""
    method_cls = METHODS.get(cfg.method)
    if data.modality not in method_cls.modalities:
        valid = [n for n in METHODS.names() if data.modality in METHODS.get(n).modalities]
        raise SelfmetaError(f"method {cfg.method!r} does not take {data.modality} data; use one of: {', '.join(valid)}")
    valid = method_options(method_cls)
    unknown = sorted(set(cfg.method_options) - set(valid))
    if unknown:
        raise SelfmetaError(
            f"unknown option {unknown[0]!r} for method {cfg.method!r}; valid: {', '.join(sorted(valid)) or 'none'}"
        )
    encoder = build_encoder(cfg.encoder, data.input_shape, **cfg.encoder_options)
    normalize = Normalize.fit(data.x, data.modality)
    view_kwargs: dict[str, Any] = dict(cfg.view_options)
    if data.modality == "table":
        view_kwargs.update(mean=normalize.mean, std=normalize.std)
    views = VIEWS.get(data.modality)(data.input_shape, **view_kwargs)
    return method_cls(Backbone(normalize, encoder), views, **cfg.method_options)


def describe(cfg: TrainConfig, data: Dataset) -> dict[str, Any]:
    """What ``load_backbone`` needs to rebuild the backbone, stored in the weights file's metadata."""
    return {
        "encoder": cfg.encoder,
        "encoder_options": cfg.encoder_options,
        "input_shape": list(data.input_shape),
        "modality": data.modality,
        "method": cfg.method,
        "classes": data.classes,
    }


def rebuild_backbone(description: dict[str, Any], state: dict[str, torch.Tensor]) -> Backbone:
    shape = tuple(description["input_shape"])
    encoder = build_encoder(description["encoder"], shape, **description.get("encoder_options", {}))
    stat_shape = (1, shape[0], 1, 1) if description["modality"] == "image" else (1, shape[0])
    backbone = Backbone(Normalize(torch.zeros(stat_shape), torch.ones(stat_shape)), encoder)
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
    # Files saved by SelfSupervised.save also hold the method's own tensors ("method.*"): not the backbone's.
    state = {k: v for k, v in state.items() if not k.startswith("method.")}
    return rebuild_backbone(description, state), description


@torch.no_grad()
def embed(backbone: Backbone, x: torch.Tensor, batch_size: int = 1024, device: str | torch.device = "cpu") -> torch.Tensor:
    """Frozen features (N, num_features) of raw items ``x``, computed in batches."""
    backbone = backbone.to(device).eval()
    out = [backbone(to_unit(x[i : i + batch_size].to(device))).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def check_compatible(description: dict[str, Any], data: Dataset) -> None:
    if tuple(description["input_shape"]) != data.input_shape:
        raise SelfmetaError(
            f"the model was trained on inputs of shape {tuple(description['input_shape'])}, "
            f"the data has {data.input_shape}"
        )
