"""Helpers shared by the method tests: deterministic views, a tiny table backbone, and the check that two
processes give the full-batch loss and gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfmeta.modalities.table import TableViews
from selfmeta.encoders import Backbone, Normalize, build_encoder
from selfmeta.engine.config import TrainConfig
from selfmeta.errors import SelfmetaError

D = 6  # input features of the tiny table problems


class ScaledViews(nn.Module):
    """Deterministic views: the k-th call returns x * (1 + k / 10), plus k / 10 with ``offset``."""

    def __init__(self, offset: bool = True) -> None:
        super().__init__()
        self.calls = 0
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * (1 + self.calls / 10) + (self.calls / 10 if self.offset else 0.0)


def option_error(method: str, tasks: str | None = None, **options) -> str:
    """The one-line error a user gets for ``method.NAME=VALUE`` options (checked by the options layer)."""
    with pytest.raises(SelfmetaError) as info:
        TrainConfig(method=method, tasks=tasks, epochs=1, method_options=options)
    return str(info.value)


def tiny_parts() -> tuple[Backbone, TableViews]:
    """A seeded MLP backbone on D features (8 outputs) and table views."""
    torch.manual_seed(0)
    encoder = build_encoder("mlp", (D,), "table", widths=(8,))
    backbone = Backbone(Normalize(torch.zeros(1, D), torch.ones(1, D)), encoder)
    return backbone, TableViews((D,), mean=torch.zeros(D), std=torch.ones(D))


def deterministic(method: nn.Module) -> nn.Module:
    """Same weights on every rank, views without randomness, no per-process batch statistics in the network."""
    method.projector = nn.Linear(8, 5)
    method.views = ScaledViews()
    return method.eval()  # the encoder's batch norm uses its running statistics


def _batch() -> torch.Tensor:
    return torch.randn(8, D, generator=torch.Generator().manual_seed(4))


def global_batch_work(make, rank: int, world: int) -> dict:
    """One rank's loss and gradients on its share of the batch (run by the ``spawn_ranks`` fixture)."""
    method = deterministic(make())
    b = 8 // world
    out = method(_batch()[rank * b : (rank + 1) * b], torch.arange(b))
    out.loss.backward()
    return {"loss": out.loss.detach(), "grads": {n: p.grad for n, p in method.named_parameters() if p.requires_grad}}


def assert_ranks_give_the_full_batch(make, ranks: list[dict]) -> None:
    """Every rank's loss is the full-batch loss and the averaged gradients (DDP's) are its gradient."""
    method = deterministic(make())
    full = method(_batch(), torch.arange(8)).loss
    full.backward()
    for r in ranks:
        assert r["loss"].item() == pytest.approx(full.item(), rel=1e-5)
    for name, p in method.named_parameters():
        if p.requires_grad:
            averaged = sum(r["grads"][name] for r in ranks) / len(ranks)
            torch.testing.assert_close(averaged, p.grad, rtol=1e-4, atol=1e-6)
    # Control: one rank's half-batch statistics alone give another loss.
    half = deterministic(make())(_batch()[:4], torch.arange(4)).loss
    assert half.item() != pytest.approx(full.item(), rel=1e-3)
