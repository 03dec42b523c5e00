"""NT-Xent against a naive loop over explicit pairs, and its distributed (gathered) form."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfmeta.objectives import nt_xent


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """Chen et al. 2020, eq. 1, one anchor at a time, in Python floats."""
    z = torch.cat([z1, z2]).double().tolist()
    b = len(z1)
    n = len(z)

    def cos(u, v):
        dot = sum(a * c for a, c in zip(u, v))
        return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(c * c for c in v)))

    total = 0.0
    for i in range(n):
        p = i + b if i < b else i - b
        denominator = sum(math.exp(cos(z[i], z[k]) / temperature) for k in range(n) if k != i)
        total += -math.log(math.exp(cos(z[i], z[p]) / temperature) / denominator)
    return total / n


CASES = [(1, 3, 0.5), (2, 4, 0.1), (5, 8, 0.2), (8, 3, 1.0), (16, 16, 0.07)]


@pytest.mark.parametrize("b,d,temperature", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_naive_loop(b, d, temperature, dtype):
    g = torch.Generator().manual_seed(b * 100 + d)
    z1 = torch.randn(b, d, generator=g, dtype=dtype)
    z2 = torch.randn(b, d, generator=g, dtype=dtype)
    loss = nt_xent(z1, z2, temperature)
    assert loss.dtype == dtype and loss.shape == ()
    expected = naive_nt_xent(z1, z2, temperature)
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    assert loss.item() == pytest.approx(expected, rel=tol, abs=tol)


def test_default_temperature_is_0_2():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    assert nt_xent(z1, z2).item() == pytest.approx(naive_nt_xent(z1, z2, 0.2), rel=1e-5)


def test_scale_invariant_and_symmetric():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    base = nt_xent(z1, z2, 0.3)
    assert torch.allclose(nt_xent(3.0 * z1, 0.5 * z2, 0.3), base)
    assert torch.allclose(nt_xent(z2, z1, 0.3), base)
    perm = torch.randperm(6, generator=g)
    assert torch.allclose(nt_xent(z1[perm], z2[perm], 0.3), base)


def test_identical_views_beat_random_ones():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(8, 16, generator=g)
    aligned = nt_xent(z, z, 0.1)
    shuffled = nt_xent(z, torch.randn(8, 16, generator=g), 0.1)
    assert aligned < shuffled
    # With z2 = z1 and nearly orthogonal items the loss approaches its floor log(1 + (2B-2) e^{-1/t}) ~ 0.
    eye = torch.eye(8)
    assert nt_xent(eye, eye, 0.1).item() == pytest.approx(math.log(1 + 14 * math.exp(-10)), rel=1e-4)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("b,d,temperature", [(1, 3, 0.5), (4, 6, 0.2), (8, 5, 0.1)])
def test_distributed_form_equals_full_batch(world, b, d, temperature):
    g = torch.Generator().manual_seed(world * 10 + b)
    z1 = torch.randn(world * b, d, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(world * b, d, generator=g, dtype=torch.float64, requires_grad=True)

    full = nt_xent(z1, z2, temperature)
    full_g1, full_g2 = torch.autograd.grad(full, [z1, z2])

    # Each simulated rank holds its slice; the gather concatenates every rank's slice in rank order and
    # lets gradients flow back (as all_gather_with_grad does), and DDP averages the ranks' gradients.
    locals1 = [z1[r * b : (r + 1) * b] for r in range(world)]
    locals2 = [z2[r * b : (r + 1) * b] for r in range(world)]
    all_z1, all_z2 = torch.cat(locals1), torch.cat(locals2)
    per_rank = [
        nt_xent(locals1[r], locals2[r], temperature, all_z1, all_z2, offset=r * b) for r in range(world)
    ]
    mean = torch.stack(per_rank).mean()
    assert mean.item() == pytest.approx(full.item(), rel=1e-12)
    g1, g2 = torch.autograd.grad(mean, [z1, z2])
    assert torch.allclose(g1, full_g1, atol=1e-12) and torch.allclose(g2, full_g2, atol=1e-12)

    # Each rank's loss is the naive loss restricted to its own anchors.
    for r in range(world):
        expected = naive_rank_loss(z1.detach(), z2.detach(), temperature, range(r * b, (r + 1) * b))
        assert per_rank[r].item() == pytest.approx(expected, rel=1e-10)


def naive_rank_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float, rows: range) -> float:
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    s = (z @ z.T / temperature).tolist()
    anchors = [i for i in rows] + [i + n for i in rows]
    total = 0.0
    for i in anchors:
        p = i + n if i < n else i - n
        denominator = sum(math.exp(s[i][k]) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(s[i][p]) / denominator)
    return total / len(anchors)


def test_wrong_offset_changes_the_loss():
    """The offset matters: anchors must find themselves and their positives among the candidates."""
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    right = nt_xent(z1[4:], z2[4:], 0.2, z1, z2, offset=4)
    wrong = nt_xent(z1[4:], z2[4:], 0.2, z1, z2, offset=0)
    assert not torch.allclose(right, wrong)
