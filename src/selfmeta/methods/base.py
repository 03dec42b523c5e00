"""The method contract and its registry.

A method is an ``nn.Module`` built from a Backbone (normalize + encoder), the Views of the data's
modality, and its own hyper-parameters. ``forward(x, index)`` takes a batch of ``to_unit`` inputs and
their positions in the data set, and returns a :class:`StepOutput`: the loss to minimize and named scalars
to log. Calling through ``forward`` lets the engine wrap the method in DistributedDataParallel. ``embed``
gives the frozen features used downstream.

Two hooks, no-ops by default, cover what some methods do outside the gradient step:
- ``on_epoch_start(epoch, data)``: before each epoch, with the whole training set (clustering methods
  assign pseudo-labels to every item here; ``index`` then finds a batch's labels);
- ``on_step_end(progress)``: after each optimizer step, with training progress in [0, 1] (momentum
  encoders update their moving averages here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from selfmeta.data.dataset import Dataset
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.options import Option, Searched
from selfmeta.registry import Registry


@dataclass
class StepOutput:
    loss: torch.Tensor                                   # scalar, differentiable
    logs: dict[str, float] = field(default_factory=dict)  # extra scalars, e.g. {"pos_sim": 0.8}


class Method(nn.Module):
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    modalities: ClassVar[tuple[str, ...] | None] = None         # the data it trains on; None: any modality
    options: ClassVar[dict[str, Option]] = {}                   # range and help of each keyword option
    # Training options this method prefers where the user sets none (e.g. TS2Vec's batch of 8 and lr 1e-3).
    defaults: ClassVar[dict[str, Any]] = {}
    search: ClassVar[dict[str, Searched]] = {}                  # the options selfmeta tune searches, and where

    def __init__(self, backbone: Backbone, views: Views) -> None:
        super().__init__()
        self.backbone = backbone
        self.views = views

    @classmethod
    def takes(cls, modality: str) -> bool:
        return cls.modalities is None or modality in cls.modalities

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        """x: (B, ...) inputs in to_unit form; index: (B,) int64 positions of the items in the data set."""
        raise NotImplementedError

    def on_epoch_start(self, epoch: int, data: Dataset) -> None:
        pass

    def on_step_end(self, progress: float) -> None:
        pass

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


METHODS: Registry[type[Method]] = Registry("method")
# Constructor arguments the engine supplies; the others are the method's options, declared in ``options``.
BUILT_BY_ENGINE = ("backbone", "views", "spec")
