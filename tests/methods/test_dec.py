"""DEC: soft assignment, target distribution and loss against naive loops; the balance term; the
distributed form; centroid initialization by k-means and ``predict``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from selfmeta.data.dataset import Dataset
from selfmeta.engine import TrainConfig
from selfmeta.engine.model import build_method
from selfmeta.errors import SelfmetaError
from selfmeta.objectives.dec import balance_kl, dec_loss, log_soft_assignment, soft_assignment, target_distribution
from selfmeta.objectives.kmeans import assign



def naive_q(z: torch.Tensor, mu: torch.Tensor, alpha: float) -> list[list[float]]:
    rows = []
    for zi in z.double().tolist():
        kernel = [(1 + sum((a - b) ** 2 for a, b in zip(zi, mj)) / alpha) ** (-(alpha + 1) / 2) for mj in mu.double().tolist()]
        rows.append([v / sum(kernel) for v in kernel])
    return rows


def naive_p(q: list[list[float]]) -> list[list[float]]:
    k = len(q[0])
    f = [sum(row[j] for row in q) for j in range(k)]
    rows = []
    for row in q:
        weighted = [row[j] ** 2 / f[j] for j in range(k)]
        rows.append([w / sum(weighted) for w in weighted])
    return rows


def naive_loss(q: list[list[float]], beta: float) -> float:
    p = naive_p(q)
    n, k = len(q), len(q[0])
    kl = sum(p[i][j] * math.log(p[i][j] / q[i][j]) for i in range(n) for j in range(k)) / n
    mean = [sum(q[i][j] for i in range(n)) / n for j in range(k)]
    balance = sum((1 / k) * math.log((1 / k) / mean[j]) for j in range(k))
    return kl + beta * balance


CASES = [(1, 2, 3, 1.0), (5, 3, 4, 1.0), (16, 10, 8, 1.0), (7, 4, 2, 0.5), (9, 5, 6, 3.0)]


@pytest.mark.parametrize("b,k,d,alpha", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_soft_assignment_matches_naive_loop_and_rows_sum_to_one(b, k, d, alpha, dtype):
    g = torch.Generator().manual_seed(b * 100 + k)
    z, mu = torch.randn(b, d, generator=g, dtype=dtype), torch.randn(k, d, generator=g, dtype=dtype)
    q = soft_assignment(z, mu, alpha)
    assert q.shape == (b, k) and q.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(q.double(), torch.tensor(naive_q(z, mu, alpha), dtype=torch.float64), rtol=tol, atol=tol)
    torch.testing.assert_close(q.sum(1), torch.ones(b, dtype=dtype))
    torch.testing.assert_close(log_soft_assignment(z, mu, alpha).exp(), q)


def test_soft_assignment_of_distant_centroids_does_not_underflow():
    z = torch.zeros(2, 3)
    mu = torch.tensor([[1e4, 0.0, 0.0], [2e4, 0.0, 0.0]])
    log_q = log_soft_assignment(z, mu, 1.0)
    assert torch.isfinite(log_q).all() and float(log_q[0, 0]) > float(log_q[0, 1])


@pytest.mark.parametrize("b,k", [(1, 2), (5, 3), (16, 10)])
def test_target_distribution_matches_naive_loop(b, k):
    g = torch.Generator().manual_seed(b + k)
    q = torch.randn(b, k, generator=g, dtype=torch.float64).softmax(1)
    p = target_distribution(q)
    torch.testing.assert_close(p, torch.tensor(naive_p(q.tolist()), dtype=torch.float64), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(p.sum(1), torch.ones(b, dtype=torch.float64))
    # P is sharper than Q (DEC's purpose): the most likely cluster of each row gains mass when f is flat.
    flat = target_distribution(q, torch.ones(k, dtype=torch.float64))
    rows = torch.arange(b)
    assert (flat[rows, q.argmax(1)] >= q[rows, q.argmax(1)] - 1e-12).all()


@pytest.mark.parametrize("b,k,d,alpha", CASES)
@pytest.mark.parametrize("beta", [0.0, 1.0, 2.5])
def test_loss_matches_naive_loop(b, k, d, alpha, beta):
    g = torch.Generator().manual_seed(b * 7 + k)
    z, mu = torch.randn(b, d, generator=g, dtype=torch.float64), torch.randn(k, d, generator=g, dtype=torch.float64)
    loss = dec_loss(log_soft_assignment(z, mu, alpha), beta)
    assert loss.total.shape == ()
    expected = naive_loss(naive_q(z, mu, alpha), beta)
    assert loss.total.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert (loss.kl + beta * loss.balance).item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_balance_term_is_zero_for_uniform_mean_assignment_only():
    assert balance_kl(torch.full((5,), 0.2)).item() == pytest.approx(0.0, abs=1e-7)
    # Uneven rows whose mean is uniform: zero as well.
    q = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64)
    assert balance_kl(q.mean(0)).item() == pytest.approx(0.0, abs=1e-12)
    assert balance_kl(torch.tensor([0.7, 0.1, 0.1, 0.1])).item() > 0.1
    collapsed = balance_kl(torch.tensor([1.0, 0.0, 0.0]))
    assert torch.isfinite(collapsed) and collapsed.item() > 5


def test_target_has_no_gradient_and_gradients_reach_embeddings_and_centroids():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    mu = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    loss = dec_loss(log_soft_assignment(z, mu), 1.0)
    gz, gmu = torch.autograd.grad(loss.total, [z, mu])
    assert gz.abs().sum() > 0 and gmu.abs().sum() > 0
    # P is a constant: the gradient equals that of sum p * (-log q) with p fixed beforehand.
    log_q = log_soft_assignment(z, mu)
    p = target_distribution(log_q.exp().detach())
    surrogate = -(p * log_q).sum(1).mean() + balance_kl(log_q.exp().mean(0))
    gz2, gmu2 = torch.autograd.grad(surrogate, [z, mu])
    torch.testing.assert_close(gz, gz2)
    torch.testing.assert_close(gmu, gmu2)


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_form_equals_full_batch(world):
    """Per-rank losses with the gathered global q (with gradient), averaged as DDP does, give the
    full-batch loss and gradient."""
    b, k, d = 4, 5, 3
    g = torch.Generator().manual_seed(world)
    z = torch.randn(world * b, d, generator=g, dtype=torch.float64, requires_grad=True)
    mu = torch.randn(k, d, generator=g, dtype=torch.float64, requires_grad=True)
    full = dec_loss(log_soft_assignment(z, mu), 1.5).total
    full_grads = torch.autograd.grad(full, [z, mu])
    log_q = [log_soft_assignment(z[r * b : (r + 1) * b], mu) for r in range(world)]
    all_q = torch.cat([lq.exp() for lq in log_q])  # what all_gather_with_grad gives every rank
    mean = torch.stack([dec_loss(log_q[r], 1.5, all_q).total for r in range(world)]).mean()
    assert mean.item() == pytest.approx(full.item(), rel=1e-12)
    for got, want in zip(torch.autograd.grad(mean, [z, mu]), full_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # Control: local statistics only (no gather) give another loss.
    local = torch.stack([dec_loss(log_q[r], 1.5).total for r in range(world)]).mean()
    assert abs(local.item() - full.item()) > 1e-6


# --- the method ------------------------------------------------------------------------------------------

def table_data(n=96, d=12):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, d, generator=g) * 4
    return Dataset(centers[torch.arange(n) % 4] + torch.randn(n, d, generator=g), None, [], "table", "tiny")


def build(data, **options):
    options = {"warmup_epochs": 0, "contrast_weight": 0.0, **options}  # plain DEC unless a test says otherwise
    cfg = TrainConfig(method="dec", encoder="mlp", epochs=1, batch_size=32, device="cpu",
                      encoder_options={"widths": [32, 16]}, method_options=options)
    return build_method(cfg, data)


def test_centroids_are_initialized_once_by_kmeans():
    data = table_data()
    torch.manual_seed(0)
    method = build(data, num_clusters=4)
    assert float(method.centroids.detach().abs().sum()) == 0.0
    method.on_epoch_start(0, data)
    assert method.training and int(method.initialized) == 1
    method.eval()
    with torch.no_grad():
        features = method.backbone(data.x)
    centroids = method.centroids.detach()
    labels, _ = assign(features, centroids)
    for j in range(4):  # a converged k-means: every centroid is the mean of its members
        members = features[labels == j]
        assert len(members) > 0
        torch.testing.assert_close(centroids[j], members.mean(0), rtol=1e-4, atol=1e-5)
    method.train()
    with torch.no_grad():
        method.centroids.add_(1.0)
    before = method.centroids.detach().clone()
    method.on_epoch_start(1, data)  # not again: the centroids are learned from here on
    assert torch.equal(method.centroids.detach(), before)
    fresh = build(data, num_clusters=4)  # and not after resuming either
    fresh.load_state_dict(method.state_dict())
    fresh.on_epoch_start(2, data)
    assert torch.equal(fresh.centroids.detach(), before)


def test_predict_is_the_nearest_centroid_of_unaugmented_items():
    data = table_data()
    torch.manual_seed(0)
    method = build(data, num_clusters=4)
    method.on_epoch_start(0, data)
    ids = method.predict(data.x)
    assert ids.shape == (96,) and ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) < 4
    assert method.training  # restored
    assert torch.equal(method.predict(data.x[:10]), ids[:10])  # eval mode: no batch effect
    method.eval()
    with torch.no_grad():
        nearest, _ = assign(method.backbone(data.x), method.centroids)
    assert torch.equal(ids, nearest)


def test_step_trains_encoder_and_centroids():
    data = table_data()
    torch.manual_seed(0)
    method = build(data, num_clusters=4, beta=2.0)
    method.on_epoch_start(0, data)
    method.views = nn.Identity()
    x = data.x[:32]
    out = method(x, torch.arange(32))
    expected = dec_loss(log_soft_assignment(method.backbone(x), method.centroids), 2.0).total
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(out.logs) == {"kl", "balance", "clusters_used"} and 1 <= out.logs["clusters_used"] <= 4
    out.loss.backward()
    assert method.centroids.grad.abs().sum() > 0
    assert all(p.grad is not None for p in method.backbone.encoder.parameters())


def test_warmup_trains_the_contrastive_term_alone_then_kmeans_places_the_centroids():
    data = table_data()
    torch.manual_seed(0)
    method = build(data, num_clusters=4, warmup_epochs=2, contrast_weight=0.5)
    x, index = data.x[:32], torch.arange(32)
    for epoch in (0, 1):
        method.on_epoch_start(epoch, data)
        assert int(method.initialized) == 0
        out = method(x, index)
        assert set(out.logs) == {"contrast", "pos_sim"}
        assert out.loss.item() == pytest.approx(0.5 * out.logs["contrast"], rel=1e-5)
    with pytest.raises(SelfmetaError, match="warmup_epochs"):
        method.predict(x)
    method.on_epoch_start(2, data)
    assert int(method.initialized) == 1
    out = method(x, index)
    assert set(out.logs) == {"contrast", "pos_sim", "kl", "balance", "clusters_used"}
    assert out.loss.item() == pytest.approx(0.5 * out.logs["contrast"] + out.logs["kl"] + out.logs["balance"], rel=1e-4)
    out.loss.backward()
    assert method.centroids.grad.abs().sum() > 0 and method.projector[0].weight.grad.abs().sum() > 0


def test_clear_errors():
    data = table_data()
    method = build(data, num_clusters=4)
    with pytest.raises(SelfmetaError, match="on_epoch_start"):
        method(data.x[:4], torch.arange(4))
    with pytest.raises(SelfmetaError, match="on_epoch_start"):
        method.predict(data.x[:4])
    with pytest.raises(SelfmetaError, match="at least"):
        build(data, num_clusters=20).on_epoch_start(0, Dataset(data.x[:10], None, [], "table", "ten"))
    for bad in ({"num_clusters": 1}, {"alpha": 0}, {"beta": -1}, {"warmup_epochs": -1}, {"contrast_weight": -1}):
        with pytest.raises(SelfmetaError, match=next(iter(bad))):
            build(data, **bad)
