"""TS2Vec's hierarchical contrastive loss against naive loops over explicit pairs (Yue et al. 2022)."""

from __future__ import annotations

import math

import pytest
import torch

from selfmeta.objectives.ts2vec import (
    hierarchical_contrastive_loss,
    instance_contrastive_loss,
    temporal_contrastive_loss,
)


def naive_nll(anchor: int, positive: int, rows: list[list[float]]) -> float:
    """-log softmax over every row but the anchor itself, at the positive; rows are vectors."""
    dots = {j: sum(a * b for a, b in zip(rows[anchor], rows[j])) for j in range(len(rows)) if j != anchor}
    top = max(dots.values())
    log_sum = top + math.log(sum(math.exp(v - top) for v in dots.values()))
    return log_sum - dots[positive]


def naive_instance(z1: torch.Tensor, z2: torch.Tensor) -> float:
    b, t, _ = z1.shape
    if b == 1:
        return 0.0
    total = 0.0
    for s in range(t):
        rows = [z1[i, s].tolist() for i in range(b)] + [z2[i, s].tolist() for i in range(b)]
        total += sum(naive_nll(i, b + i, rows) + naive_nll(b + i, i, rows) for i in range(b)) / (2 * b)
    return total / t


def naive_temporal(z1: torch.Tensor, z2: torch.Tensor) -> float:
    b, t, _ = z1.shape
    if t == 1:
        return 0.0
    total = 0.0
    for i in range(b):
        rows = [z1[i, s].tolist() for s in range(t)] + [z2[i, s].tolist() for s in range(t)]
        total += sum(naive_nll(s, t + s, rows) + naive_nll(t + s, s, rows) for s in range(t)) / (2 * t)
    return total / b


def naive_hierarchical(z1: torch.Tensor, z2: torch.Tensor, alpha: float, temporal_unit: int) -> float:
    total, scales = 0.0, 0
    while z1.shape[1] > 1:
        total += alpha * naive_instance(z1, z2)
        if scales >= temporal_unit:
            total += (1 - alpha) * naive_temporal(z1, z2)
        scales += 1
        t = z1.shape[1] // 2                                       # max-pooling by 2, the odd last step dropped
        z1 = torch.stack([z1[:, 2 * k : 2 * k + 2].amax(1) for k in range(t)], 1)
        z2 = torch.stack([z2[:, 2 * k : 2 * k + 2].amax(1) for k in range(t)], 1)
    total += alpha * naive_instance(z1, z2)
    return total / (scales + 1)


@pytest.mark.parametrize("b, t", [(3, 5), (1, 4), (4, 1)])
def test_instance_and_temporal_terms(b, t):
    g = torch.Generator().manual_seed(b * 10 + t)
    z1, z2 = torch.randn(b, t, 6, generator=g, dtype=torch.float64), torch.randn(b, t, 6, generator=g, dtype=torch.float64)
    assert float(instance_contrastive_loss(z1, z2)) == pytest.approx(naive_instance(z1, z2), rel=1e-9, abs=1e-12)
    assert float(temporal_contrastive_loss(z1, z2)) == pytest.approx(naive_temporal(z1, z2), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("t, alpha, unit", [(7, 0.5, 0), (8, 0.3, 1), (5, 1.0, 0)])
def test_hierarchical_loss(t, alpha, unit):
    g = torch.Generator().manual_seed(t)
    z1, z2 = torch.randn(3, t, 4, generator=g, dtype=torch.float64), torch.randn(3, t, 4, generator=g, dtype=torch.float64)
    expected = naive_hierarchical(z1, z2, alpha, unit)
    assert float(hierarchical_contrastive_loss(z1, z2, alpha, unit)) == pytest.approx(expected, rel=1e-9)


def test_agreeing_views_cost_less_and_gradients_flow():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 8, 16, generator=g)
    noisy = z + 0.05 * torch.randn(z.shape, generator=g)
    unrelated = torch.randn(z.shape, generator=g)
    assert hierarchical_contrastive_loss(z, noisy) < hierarchical_contrastive_loss(z, unrelated)
    z1 = z.clone().requires_grad_(True)
    hierarchical_contrastive_loss(z1, noisy).backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


def test_widely_spread_similarities_keep_loss_and_gradient():
    """Trained representations give dot products hundreds of units apart: the floor that keeps softmax
    weights out of subnormal floats (slow on x86) must leave the loss and its gradient as they are."""
    g = torch.Generator().manual_seed(1)
    z1 = (8 * torch.randn(2, 40, 16, generator=g, dtype=torch.float64)).requires_grad_(True)
    z2 = z1.detach() + torch.randn(2, 40, 16, generator=g, dtype=torch.float64)
    loss = temporal_contrastive_loss(z1, z2)
    assert float(loss.detach()) == pytest.approx(naive_temporal(z1.detach(), z2), rel=1e-9)
    (grad,) = torch.autograd.grad(loss, z1)

    def unfloored(a):                                                 # the plain formula, no floor
        z = torch.cat([a, z2], dim=1)
        sim = z @ z.transpose(1, 2)
        sim = sim - torch.diag_embed(torch.full(sim.shape[:2], float("inf"), dtype=sim.dtype))
        positive = (a * z2).sum(-1)
        return (torch.logsumexp(sim, -1) - torch.cat([positive, positive], 1)).mean()

    spread = (z1 @ z1.transpose(1, 2)).detach()
    assert float(spread.amax() - spread.amin()) > 500                  # the floor is active here
    (expected,) = torch.autograd.grad(unfloored(z1), z1)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)


def test_hand_written_gradient_passes_gradcheck():
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(2, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(2, 6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: hierarchical_contrastive_loss(a, b, 0.5, 0), (z1, z2))
