"""BYOL: the loss against a naive computation, the cosine momentum schedule, and the moving-average target."""

from __future__ import annotations

import math

import pytest
import torch
from method_testing import D, ScaledViews, option_error, tiny_parts
from torch import nn

from selfmeta.engine.optim import build_optimizer
from selfmeta.methods import METHODS
from selfmeta.methods.byol import BYOL
from selfmeta.methods.momentum import cosine_momentum, ema_update_, momentum_copy
from selfmeta.objectives.byol import byol_loss, normalized_mse


def tiny_byol(**options) -> BYOL:
    backbone, views = tiny_parts()
    return BYOL(backbone, views, **{"proj_hidden": 8, "proj_dim": 4, "pred_hidden": 8, **options})

def naive_byol(p1, p2, z1, z2) -> float:
    """Grill et al. 2020, eq. 2, symmetrized: |p/|p| - z'/|z'||^2 element by element, in Python floats."""

    def squared_distance(p, z):
        np_, nz = math.sqrt(sum(a * a for a in p)), math.sqrt(sum(c * c for c in z))
        return sum((a / np_ - c / nz) ** 2 for a, c in zip(p, z))

    p1, p2, z1, z2 = (t.double().tolist() for t in (p1, p2, z1, z2))
    total = sum(squared_distance(p1[i], z2[i]) + squared_distance(p2[i], z1[i]) for i in range(len(p1)))
    return total / len(p1)


@pytest.mark.parametrize("b,d", [(1, 2), (4, 3), (7, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_matches_naive_computation(b, d, dtype):
    g = torch.Generator().manual_seed(b * 10 + d)
    p1, p2, z1, z2 = (torch.randn(b, d, generator=g, dtype=dtype) for _ in range(4))
    loss = byol_loss(p1, p2, z1, z2)
    assert loss.dtype == dtype and loss.shape == ()
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert loss.item() == pytest.approx(naive_byol(p1, p2, z1, z2), rel=tol, abs=tol)
    assert normalized_mse(p1, 3.0 * p1).abs().max() < 1e-5  # scale-free; 0 when aligned, 4 when opposed
    assert normalized_mse(p1, -p1).sub(4).abs().max() < 1e-5


def test_schedule_endpoints():
    assert cosine_momentum(0.0, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(1.0, 0.99) == pytest.approx(1.0)
    assert cosine_momentum(0.5, 0.9) == pytest.approx(0.95)
    assert cosine_momentum(0.25, 0.9) == pytest.approx(1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)
    assert cosine_momentum(-1.0, 0.9) == pytest.approx(0.9) and cosine_momentum(2.0, 0.9) == pytest.approx(1.0)
    values = [cosine_momentum(t / 10, 0.99) for t in range(11)]
    assert values == sorted(values)  # tau rises monotonically


def test_ema_update_rule():
    torch.manual_seed(1)
    online = nn.Linear(3, 2)
    target = momentum_copy(online)
    with torch.no_grad():
        online.weight.add_(1.0)
    before = target.weight.clone()
    ema_update_(target, online, 0.75)
    torch.testing.assert_close(target.weight, 0.75 * before + 0.25 * online.weight.detach())
    with pytest.raises(ValueError, match="parameters"):
        ema_update_(target, nn.Linear(3, 2, bias=False), 0.5)


def test_forward_pairs_each_prediction_with_the_other_views_target():
    method = tiny_byol()
    method.views = ScaledViews(offset=False)
    x = torch.randn(5, D, generator=torch.Generator().manual_seed(2))
    v = torch.cat([x * 1.1, x * 1.2])
    with torch.no_grad():
        p = method.predictor(method.projector(method.backbone(v)))
        z = method.target_projector(method.target_backbone(v))
    out = method(x, torch.arange(5))
    assert out.loss.item() == pytest.approx(naive_byol(p[:5], p[5:], z[:5], z[5:]), rel=1e-5)
    assert out.loss.item() != pytest.approx(naive_byol(p[:5], p[5:], z[5:], z[:5]), rel=1e-3)


def test_target_gets_no_gradient_and_moves_by_the_scheduled_ema():
    method = tiny_byol(momentum=0.9)
    target = list(method.target_backbone.parameters()) + list(method.target_projector.parameters())
    online = list(method.backbone.parameters()) + list(method.projector.parameters())
    assert target and all(not p.requires_grad for p in target)
    optimizer = build_optimizer("adamw", method, 0.1, 0.0)
    assert not {id(p) for g in optimizer.param_groups for p in g["params"]} & {id(p) for p in target}

    method(torch.randn(8, D, generator=torch.Generator().manual_seed(3)), torch.arange(8)).loss.backward()
    assert all(p.grad is None for p in target)
    assert all(p.grad is not None for p in online + list(method.predictor.parameters()))
    optimizer.step()

    before = [p.detach().clone() for p in target]
    now = [p.detach().clone() for p in online]
    assert any(not torch.equal(b, o) for b, o in zip(before, now))
    method.on_step_end(0.25)
    tau = 1 - 0.1 * (math.cos(math.pi * 0.25) + 1) / 2
    for p, b, o in zip(target, before, now):
        torch.testing.assert_close(p, tau * b + (1 - tau) * o)
    # The predictor has no target copy: the target is backbone + projector only.
    assert sum(p.numel() for p in target) == sum(p.numel() for p in online)


def test_options_are_validated_and_registered():
    assert METHODS.get("byol") is BYOL
    assert "option momentum takes a number >= 0 and <= 1, got -0.1" in option_error("byol", momentum=-0.1)
