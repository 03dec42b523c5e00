"""The method contract and its registry.

A method is an ``nn.Module`` built from a Backbone (normalize + encoder), the Views of the data's
modality, and its own hyper-parameters. ``forward(x)`` takes a batch of ``to_unit`` inputs and returns a
:class:`StepOutput`: the loss to minimize and named scalars to log. Calling through ``forward`` lets the
engine wrap the method in DistributedDataParallel. ``embed`` gives the frozen features used downstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from selfmeta.data.views import Views
from selfmeta.encoders.base import Backbone
from selfmeta.registry import Registry


@dataclass
class StepOutput:
    loss: torch.Tensor                                   # scalar, differentiable
    logs: dict[str, float] = field(default_factory=dict)  # extra scalars, e.g. {"pos_sim": 0.8}


class Method(nn.Module):
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def __init__(self, backbone: Backbone, views: Views) -> None:
        super().__init__()
        self.backbone = backbone
        self.views = views

    def forward(self, x: torch.Tensor) -> StepOutput:
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


METHODS: Registry[type[Method]] = Registry("method")


def method_options(cls: type[Method]) -> dict[str, Any]:
    """The keyword options a method takes, with their defaults (for validation and ``selfmeta list``)."""
    import inspect

    params = list(inspect.signature(cls.__init__).parameters.values())[3:]  # after self, backbone, views
    return {p.name: p.default for p in params}
