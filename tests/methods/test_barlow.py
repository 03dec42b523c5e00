"""Barlow Twins: the loss against naive loops, and (slow) the global-batch loss and gradient under two
processes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from selfmeta import distributed
from selfmeta.data.views import TableViews
from selfmeta.encoders import Backbone, Normalize, build_encoder
from selfmeta.errors import SelfmetaError
from selfmeta.methods import METHODS
from selfmeta.methods.barlow import BarlowTwins
from selfmeta.objectives.barlow import barlow_twins_loss, cross_correlation



D = 6


class ScaledViews(nn.Module):
    """Deterministic views: the k-th call returns x * (1 + k / 10) + k / 10."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * (1 + self.calls / 10) + self.calls / 10


def tiny_barlow(**options) -> BarlowTwins:
    torch.manual_seed(0)
    encoder = build_encoder("mlp", (D,), widths=(8,))
    backbone = Backbone(Normalize(torch.zeros(1, D), torch.ones(1, D)), encoder)
    views = TableViews((D,), mean=torch.zeros(D), std=torch.ones(D))
    return BarlowTwins(backbone, views, **{"proj_hidden": 8, "proj_dim": 5, **options})


def naive_barlow(z1: torch.Tensor, z2: torch.Tensor, lambd: float, eps: float = 1e-5) -> float:
    """Zbontar et al. 2021, eqs. 1-2, element by element in Python floats."""
    a, b = z1.double().tolist(), z2.double().tolist()
    n, d = len(a), len(a[0])

    def standardized_columns(z):
        columns = []
        for j in range(d):
            column = [z[i][j] for i in range(n)]
            mean = sum(column) / n
            var = sum((c - mean) ** 2 for c in column) / n
            columns.append([(c - mean) / math.sqrt(var + eps) for c in column])
        return columns

    ca, cb = standardized_columns(a), standardized_columns(b)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(ca[i][k] * cb[j][k] for k in range(n)) / n
            total += (1 - c_ij) ** 2 if i == j else lambd * c_ij**2
    return total


@pytest.mark.parametrize("n,d,lambd", [(2, 1, 5e-3), (5, 3, 5e-3), (16, 8, 0.1), (7, 12, 1.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_matches_naive_loops(n, d, lambd, dtype):
    g = torch.Generator().manual_seed(n * 10 + d)
    z1 = torch.randn(n, d, generator=g, dtype=dtype) * 3 + 1
    z2 = z1 + torch.randn(n, d, generator=g, dtype=dtype)
    loss = barlow_twins_loss(z1, z2, lambd)
    assert loss.dtype == dtype and loss.shape == ()
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    assert loss.item() == pytest.approx(naive_barlow(z1, z2, lambd), rel=tol, abs=tol)


def test_default_lambda_and_correlation_properties():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(32, 4, generator=g, dtype=torch.float64), torch.randn(32, 4, generator=g, dtype=torch.float64)
    assert barlow_twins_loss(z1, z2).item() == pytest.approx(naive_barlow(z1, z2, 5e-3), rel=1e-9)
    c = cross_correlation(z1, z1)
    assert torch.allclose(torch.diagonal(c), torch.ones(4, dtype=torch.float64), atol=1e-4)  # a view with itself
    # Per-dimension affine changes do not matter (up to eps): the dimensions are standardized over the batch.
    scale, shift = torch.tensor([1.0, 5.0, 0.2, 3.0], dtype=torch.float64), torch.arange(4.0, dtype=torch.float64)
    assert barlow_twins_loss(z1 * scale + shift, z2, 0.1, eps=0.0).item() == pytest.approx(
        barlow_twins_loss(z1, z2, 0.1, eps=0.0).item(), rel=1e-10)
    # Identical views with uncorrelated, zero-mean dimensions (Hadamard columns) are the optimum: loss ~0.
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    hadamard = torch.kron(torch.kron(h2, h2), h2)[:, 1:5]            # (8, 4), orthogonal +-1 columns
    assert barlow_twins_loss(hadamard, hadamard).item() < 1e-8 < barlow_twins_loss(z1, z2).item()


def test_options_are_validated_and_registered():
    assert METHODS.get("barlow") is BarlowTwins
    with pytest.raises(SelfmetaError, match="lambd"):
        tiny_barlow(lambd=-1.0)


def _deterministic(method: BarlowTwins) -> BarlowTwins:
    """Same weights on every rank, views without randomness, no per-process batch statistics in the network."""
    method.projector = nn.Linear(8, 5)
    method.views = ScaledViews()
    return method.eval()  # the encoder's batch norm uses its running statistics


def _batch() -> torch.Tensor:
    return torch.randn(8, D, generator=torch.Generator().manual_seed(4))


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        method = _deterministic(tiny_barlow())
        b = 8 // world
        out = method(_batch()[rank * b : (rank + 1) * b], torch.arange(b))
        out.loss.backward()
        grads = {n: p.grad for n, p in method.named_parameters() if p.requires_grad}
        torch.save({"loss": out.loss.detach(), "grads": grads, "world": distributed.world_size()},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_give_the_full_batch_loss_and_gradient(tmp_path):
    import torch.multiprocessing as mp

    world = 2
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    assert all(r["world"] == world for r in ranks)

    method = _deterministic(tiny_barlow())
    full = method(_batch(), torch.arange(8)).loss
    full.backward()
    for r in ranks:
        assert r["loss"].item() == pytest.approx(full.item(), rel=1e-5)
    for name, p in method.named_parameters():
        if p.requires_grad:  # DDP averages the ranks' gradients
            torch.testing.assert_close(sum(r["grads"][name] for r in ranks) / world, p.grad, rtol=1e-4, atol=1e-6)

    # Control: each rank's half-batch statistics alone give another loss.
    half = _deterministic(tiny_barlow())(_batch()[:4], torch.arange(4)).loss
    assert half.item() != pytest.approx(full.item(), rel=1e-3)
