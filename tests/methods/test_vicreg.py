"""VICReg: each term and the weighted loss against naive loops, and (slow) the global-batch loss and
gradient under two processes."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from method_testing import D, assert_ranks_give_the_full_batch, global_batch_work, option_error, tiny_parts

from selfmeta.methods import METHODS
from selfmeta.methods.vicreg import VICReg
from selfmeta.objectives.vicreg import vicreg_loss, vicreg_terms


def tiny_vicreg(**options) -> VICReg:
    backbone, views = tiny_parts()
    return VICReg(backbone, views, **{"proj_hidden": 8, "proj_dim": 5, **options})


def naive_terms(z1: torch.Tensor, z2: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> tuple[float, ...]:
    """Bardes et al. 2022, eqs. 1-5, element by element in Python floats."""
    a, b = z1.double().tolist(), z2.double().tolist()
    n, d = len(a), len(a[0])
    invariance = sum((a[i][j] - b[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def variance(z):
        total = 0.0
        for j in range(d):
            mean = sum(z[i][j] for i in range(n)) / n
            var = sum((z[i][j] - mean) ** 2 for i in range(n)) / (n - 1)
            total += max(0.0, gamma - math.sqrt(var + eps))
        return total / d

    def covariance(z):
        means = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
        total = 0.0
        for j in range(d):
            for k in range(d):
                if j != k:
                    cov = sum((z[i][j] - means[j]) * (z[i][k] - means[k]) for i in range(n)) / (n - 1)
                    total += cov**2
        return total / d

    return invariance, variance(a) + variance(b), covariance(a) + covariance(b)


CASES = [(2, 1), (5, 3), (16, 8), (7, 12)]


@pytest.mark.parametrize("n,d", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_terms_and_loss_match_naive_loops(n, d, dtype):
    g = torch.Generator().manual_seed(n * 10 + d)
    z1 = torch.randn(n, d, generator=g, dtype=dtype) * torch.linspace(0.2, 2.0, d, dtype=dtype)  # some stds < 1
    z2 = z1 + 0.5 * torch.randn(n, d, generator=g, dtype=dtype)
    t = vicreg_terms(z1, z2)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    expected = naive_terms(z1, z2)
    for got, want in zip(t, expected):
        assert got.dtype == dtype and got.item() == pytest.approx(want, rel=tol, abs=tol)
    loss = vicreg_loss(z1, z2)
    assert loss.item() == pytest.approx(25 * expected[0] + 25 * expected[1] + expected[2], rel=tol, abs=tol)
    weighted = vicreg_loss(z1, z2, sim_coeff=2.0, std_coeff=3.0, cov_coeff=5.0, gamma=0.5, eps=1e-3)
    inv, var, cov = naive_terms(z1, z2, gamma=0.5, eps=1e-3)
    assert weighted.item() == pytest.approx(2 * inv + 3 * var + 5 * cov, rel=tol, abs=tol)


def test_term_properties():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 4, generator=g, dtype=torch.float64)
    t = vicreg_terms(z, z)
    assert t.invariance.item() == 0.0
    assert vicreg_terms(10 * z, 10 * z).variance.item() == 0.0  # every std above gamma = 1: no hinge
    collapsed = vicreg_terms(torch.zeros(8, 4), torch.zeros(8, 4))
    assert collapsed.variance.item() == pytest.approx(2 * (1 - math.sqrt(1e-4)))  # both branches at the hinge
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    hadamard = torch.kron(torch.kron(h2, h2), h2)[:, 1:5]  # uncorrelated columns
    assert vicreg_terms(hadamard, hadamard).covariance.item() == pytest.approx(0.0, abs=1e-12)
    assert vicreg_terms(z[:, [0, 0, 1, 1]], z[:, [0, 0, 1, 1]]).covariance.item() > 0.1  # duplicated dimensions


def test_options_are_validated_and_registered():
    assert METHODS.get("vicreg") is VICReg
    assert "option cov_coeff takes a number >= 0, got -1.0" in option_error("vicreg", cov_coeff=-1.0)


def test_forward_logs_the_terms():
    method = tiny_vicreg(sim_coeff=1.0, std_coeff=2.0, cov_coeff=3.0)
    out = method(torch.randn(8, D), torch.arange(8))
    assert set(out.logs) == {"invariance", "variance", "covariance"}
    expected = out.logs["invariance"] + 2 * out.logs["variance"] + 3 * out.logs["covariance"]
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_two_processes_give_the_full_batch_loss_and_gradient(spawn_ranks):
    ranks = spawn_ranks(partial(global_batch_work, tiny_vicreg))
    assert_ranks_give_the_full_batch(tiny_vicreg, ranks)
