"""SeLa: Sinkhorn-Knopp against the paper's scaling loop, its marginals, balanced labels where argmax
collapses, and the method's re-labelling from its own head."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfmeta.data.dataset import Dataset
from selfmeta.engine import TrainConfig
from selfmeta.engine.model import build_method
from selfmeta.errors import SelfmetaError
from selfmeta.methods.sela import SINKHORN_TOL
from selfmeta.objectives.sinkhorn import sinkhorn



def naive_sinkhorn(log_probs: torch.Tensor, lam: float, iters: int) -> list[list[float]]:
    """Asano et al.'s algorithm with explicit loops in Python floats: P^lam, then alternately rescale the
    columns to 1/K and the rows to 1/N."""
    p = [[math.exp(lam * v) for v in row] for row in log_probs.double().tolist()]
    n, k = len(p), len(p[0])
    alpha, beta = [1.0] * n, [1.0] * k
    for _ in range(iters):
        for j in range(k):
            beta[j] = (1 / k) / sum(alpha[i] * p[i][j] for i in range(n))
        for i in range(n):
            alpha[i] = (1 / n) / sum(p[i][j] * beta[j] for j in range(k))
    return [[alpha[i] * p[i][j] * beta[j] for j in range(k)] for i in range(n)]


@pytest.mark.parametrize("n,k,lam,iters", [(2, 2, 1.0, 1), (6, 3, 2.0, 5), (9, 4, 5.0, 30), (5, 5, 0.5, 50)])
def test_matches_the_naive_scaling_loop(n, k, lam, iters):
    g = torch.Generator().manual_seed(n * 10 + k)
    log_probs = torch.randn(n, k, generator=g).log_softmax(1)
    plan = sinkhorn(log_probs, lam, iters)
    assert plan.shape == (n, k) and plan.dtype == torch.float64
    expected = torch.tensor(naive_sinkhorn(log_probs, lam, iters), dtype=torch.float64)
    torch.testing.assert_close(plan, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0])
def test_marginals_are_uniform_over_items_and_clusters(scale):
    g = torch.Generator().manual_seed(0)
    n, k = 120, 6
    log_probs = (scale * torch.randn(n, k, generator=g)).log_softmax(1)
    plan = sinkhorn(log_probs, lam=25.0, iters=2000)
    assert (plan >= 0).all() and float(plan.sum()) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(plan.sum(1), torch.full((n,), 1 / n, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((k,), 1 / k, dtype=torch.float64), rtol=1e-6, atol=0)


def test_tolerance_stops_early_with_the_marginals_it_promises():
    g = torch.Generator().manual_seed(1)
    log_probs = (3 * torch.randn(200, 5, generator=g)).log_softmax(1)
    full = sinkhorn(log_probs, 25.0, iters=3000)
    early = sinkhorn(log_probs, 25.0, iters=3000, tol=1e-3)
    assert ((early.sum(0) * 5 - 1).abs() <= 1e-3).all()
    assert not torch.allclose(early, full, rtol=1e-9, atol=0)  # it did stop before the end


def test_degenerate_input_gets_balanced_labels():
    # Every item prefers cluster 0: plain argmax puts everything there; the equal-partition plan spreads
    # the items over all clusters (the tiny noise only breaks ties).
    g = torch.Generator().manual_seed(0)
    n, k = 200, 5
    log_probs = (torch.tensor([4.0, 0.0, 0.0, 0.0, 0.0]) + 1e-3 * torch.randn(n, k, generator=g)).log_softmax(1)
    assert torch.bincount(log_probs.argmax(1), minlength=k).tolist() == [n, 0, 0, 0, 0]
    labels = sinkhorn(log_probs, 25.0, 100).argmax(1)
    counts = torch.bincount(labels, minlength=k)
    assert int(counts.min()) >= 0.75 * n / k and int(counts.max()) <= 1.25 * n / k, counts.tolist()


def test_sharp_probabilities_do_not_underflow():
    log_probs = torch.full((50, 4), -200.0)
    log_probs[:, 0] = 0.0
    plan = sinkhorn(log_probs, lam=25.0, iters=50)  # P^lam = exp(-5000) for most entries
    assert torch.isfinite(plan).all()
    torch.testing.assert_close(plan.sum(0), torch.full((4,), 0.25, dtype=torch.float64), rtol=1e-6, atol=0)


# --- the method ------------------------------------------------------------------------------------------

def table_data(n=96, d=12):
    g = torch.Generator().manual_seed(0)
    return Dataset(torch.randn(n, d, generator=g), None, [], "table", "tiny")


def build(data, **options):
    cfg = TrainConfig(method="sela", encoder="mlp", epochs=1, batch_size=32, device="cpu",
                      encoder_options={"widths": [32, 16]}, method_options=options)
    return build_method(cfg, data)


def test_relabel_is_the_sinkhorn_argmax_of_the_heads_probabilities():
    data = table_data()
    torch.manual_seed(0)
    method = build(data, num_clusters=8)
    with torch.no_grad():  # a head that sends every item to cluster 3: argmax labels would collapse
        method.head.bias.zero_()
        method.head.bias[3] = 5.0
    head = method.head.weight.detach().clone()
    method.on_epoch_start(0, data)
    assert method.training
    method.eval()
    with torch.no_grad():
        log_probs = method.head(method.backbone(data.x)).log_softmax(1)
    assert torch.bincount(log_probs.argmax(1), minlength=8).max() == 96
    expected = sinkhorn(log_probs, 25.0, 100, tol=SINKHORN_TOL).argmax(1)
    assert torch.equal(method.pseudo_labels, expected)
    counts = torch.bincount(method.pseudo_labels, minlength=8)
    assert int(counts.min()) >= 6 and int(counts.max()) <= 18, counts.tolist()  # N/k = 12
    assert torch.equal(method.cluster_sizes, counts)
    assert torch.equal(method.head.weight, head)  # SeLa keeps its head: the labels come from it


def test_loss_is_the_cross_entropy_against_the_pseudo_labels():
    data = table_data()
    torch.manual_seed(0)
    method = build(data, num_clusters=100)  # clamped to N // 2 = 48
    method.on_epoch_start(0, data)
    assert int(method.active_clusters) == 48 and int(method.pseudo_labels.max()) < 48
    method.views = nn.Identity()
    index = torch.arange(10, 42)
    out = method(data.x[index], index)
    logits = method.head(method.backbone(data.x[index]))[:, :48]
    expected = F.cross_entropy(logits.double(), method.pseudo_labels[index])
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out.loss.backward()
    assert method.head.weight.grad[:48].abs().sum() > 0 and method.head.weight.grad[48:].abs().sum() == 0


def test_resume_keeps_the_labels_and_options_are_checked():
    data = table_data()
    torch.manual_seed(0)
    method = build(data, num_clusters=6)
    method.on_epoch_start(2, data)
    fresh = build(data, num_clusters=6)
    fresh.load_state_dict(method.state_dict())
    with torch.no_grad():
        fresh.head.weight.add_(1.0)  # would change the labels if they were recomputed
    fresh.on_epoch_start(2, data)
    assert torch.equal(fresh.pseudo_labels, method.pseudo_labels)
    with pytest.raises(SelfmetaError, match="lam"):
        build(data, lam=0)
    with pytest.raises(SelfmetaError, match="sinkhorn_iters"):
        build(data, sinkhorn_iters=0)
