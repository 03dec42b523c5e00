"""Barlow Twins: the loss against naive loops, and (slow) the global-batch loss and gradient under two
processes."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from method_testing import assert_ranks_give_the_full_batch, global_batch_work, option_error, tiny_parts

from selfmeta.methods import METHODS
from selfmeta.methods.barlow import BarlowTwins
from selfmeta.objectives.barlow import barlow_twins_loss, cross_correlation


def tiny_barlow(**options) -> BarlowTwins:
    backbone, views = tiny_parts()
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
    assert "method 'barlow' option lambd takes a number >= 0, got -1.0" in option_error("barlow", lambd=-1.0)


@pytest.mark.slow
def test_two_processes_give_the_full_batch_loss_and_gradient(spawn_ranks):
    ranks = spawn_ranks(partial(global_batch_work, tiny_barlow))
    assert_ranks_give_the_full_batch(tiny_barlow, ranks)
