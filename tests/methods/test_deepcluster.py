"""DeepCluster: k-means (against scikit-learn and a naive loop, empty-cluster re-seeding), PCA whitening,
the class-balanced cross-entropy against a naive loop, and the method's per-epoch re-labelling."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from torch import nn

from selfmeta.data.dataset import Dataset
from selfmeta.engine import TrainConfig
from selfmeta.engine.model import build_method
from selfmeta.errors import SelfmetaError
from selfmeta.objectives.balanced import balanced_cross_entropy
from selfmeta.objectives.kmeans import kmeans, pca_whiten



# --- k-means ---------------------------------------------------------------------------------------------

def blobs(n=300, centers=4, d=5, seed=0):
    x, y = make_blobs(n_samples=n, centers=centers, n_features=d, cluster_std=0.6, random_state=seed)
    return torch.tensor(x, dtype=torch.float64), y


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_kmeans_matches_sklearn_on_easy_blobs(seed):
    x, y = blobs(seed=seed)
    ours = kmeans(x, 4, iters=50, seed=seed)  # k-means++, a single run
    reference = KMeans(4, n_init=10, random_state=seed).fit(x.numpy())
    assert ours.inertia == pytest.approx(reference.inertia_, rel=1e-6)
    assert adjusted_rand_score(y, ours.labels.numpy()) == 1.0
    assert ours.labels.dtype == torch.int64 and ours.centroids.shape == (4, 5)
    assert ours.iterations < 50  # converged: the assignment stopped changing


def test_random_init_converges_to_a_valid_clustering():
    # One random start may stop in a local optimum (hence k-means++ by default): never below the optimum.
    x, _ = blobs(seed=0)
    reference = KMeans(4, n_init=10, random_state=0).fit(x.numpy())
    ours = kmeans(x, 4, iters=100, seed=0, init="random")
    assert ours.inertia >= reference.inertia_ * (1 - 1e-9)
    labels, inertia = naive_assignment(x, ours.centroids)
    assert ours.labels.tolist() == labels and ours.inertia == pytest.approx(inertia, rel=1e-10)


def naive_assignment(x: torch.Tensor, centroids: torch.Tensor) -> tuple[list[int], float]:
    """Nearest centroid of every point and the inertia, one point and one centroid at a time."""
    labels, inertia = [], 0.0
    for point in x.tolist():
        distances = [sum((a - b) ** 2 for a, b in zip(point, c)) for c in centroids.tolist()]
        best = min(range(len(distances)), key=distances.__getitem__)
        labels.append(best)
        inertia += distances[best]
    return labels, inertia


def test_kmeans_result_is_a_lloyd_fixed_point():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(60, 3, generator=g, dtype=torch.float64)
    result = kmeans(x, 5, iters=100, seed=3)
    labels, inertia = naive_assignment(x, result.centroids)
    assert result.labels.tolist() == labels
    assert result.inertia == pytest.approx(inertia, rel=1e-10)
    for j in range(5):  # every centroid is the mean of its points
        members = [p for p, label in zip(x.tolist(), labels) if label == j]
        assert members
        mean = [sum(col) / len(members) for col in zip(*members)]
        assert result.centroids[j].tolist() == pytest.approx(mean, abs=1e-10)


def test_kmeans_is_deterministic_given_the_seed():
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    a, b = kmeans(x, 8, seed=5), kmeans(x, 8, seed=5)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)
    assert not torch.equal(kmeans(x, 8, seed=6, iters=1).centroids, a.centroids)


def test_empty_cluster_is_reseeded_by_splitting_a_populated_one():
    # Two tight blobs; the third initial centroid is far from everything, so it gets no point at the first
    # assignment. It must be re-seeded from a populated cluster, and all three clusters end up in use.
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(40, 2, generator=g, dtype=torch.float64) * 0.1 + torch.tensor([1.0, 1.0]),
                   torch.randn(40, 2, generator=g, dtype=torch.float64) * 0.1 + torch.tensor([10.0, 10.0])])
    init = torch.tensor([[1.0, 1.0], [10.0, 10.0], [100.0, -100.0]], dtype=torch.float64)
    result = kmeans(x, 3, iters=50, seed=0, init=init)
    assert result.reseeded >= 1
    sizes = torch.bincount(result.labels, minlength=3)
    assert (sizes > 0).all(), sizes
    assert torch.linalg.vector_norm(result.centroids[2] - torch.tensor([100.0, -100.0], dtype=torch.float64)) > 50
    # The split cluster's two halves are both inside one blob: the blobs themselves stay separated.
    assert len({int(label) for label in result.labels[:40]} & {int(label) for label in result.labels[40:]}) == 0
    # Splitting lowers the inertia below the two-cluster solution.
    two = kmeans(x, 2, iters=50, seed=0, init=init[:2])
    assert result.inertia < two.inertia
    # Without the far centroid nothing is re-seeded.
    assert kmeans(x, 2, iters=50, seed=0, init=init[:2]).reseeded == 0


def test_kmeans_rejects_bad_arguments():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="k <= N"):
        kmeans(x, 6)
    with pytest.raises(ValueError, match="unknown init"):
        kmeans(x, 2, init="forgy")
    with pytest.raises(ValueError, match="shape"):
        kmeans(x, 2, init=torch.zeros(3, 2))


def test_kmeans_on_identical_points_does_not_crash():
    result = kmeans(torch.ones(10, 3), 3, seed=0)
    assert result.labels.shape == (10,) and result.inertia == pytest.approx(0.0, abs=1e-6)


# --- PCA whitening ---------------------------------------------------------------------------------------

def test_pca_whiten_gives_unit_covariance_in_the_top_components():
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=g, dtype=torch.float64)
    x = torch.randn(500, 6, generator=g, dtype=torch.float64) @ mixing + 3.0
    y = pca_whiten(x, 4)
    assert y.shape == (500, 4) and y.dtype == torch.float64
    cov = torch.cov(y.T)
    torch.testing.assert_close(cov, torch.eye(4, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(y.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-10, rtol=0)
    # The kept directions are those of largest variance: projecting back explains more than any other 4.
    eigenvalues = torch.linalg.eigvalsh(torch.cov(x.T)).flip(0)
    x_centred = x - x.mean(0)
    explained = torch.linalg.lstsq(y, x_centred).solution
    residual = (x_centred - y @ explained).pow(2).sum() / (len(x) - 1)
    assert float(residual) == pytest.approx(float(eigenvalues[4:].sum()), rel=1e-6)


def test_pca_whiten_drops_directions_without_variance():
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(50, 3, generator=g, dtype=torch.float64), torch.zeros(50, 5, dtype=torch.float64)], 1)
    y = pca_whiten(x, 256)
    assert y.shape == (50, 3) and torch.isfinite(y).all()
    assert pca_whiten(torch.ones(10, 4), 2).shape == (10, 1)  # constant data: one zero column, no NaN


# --- the class-balanced loss -----------------------------------------------------------------------------

def naive_balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, sizes: torch.Tensor) -> float:
    total, weights = 0.0, 0.0
    for row, label in zip(logits.double().tolist(), labels.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        w = 1.0 / int(sizes[label])
        total += w * (log_z - row[label])
        weights += w
    return total / weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b,k", [(1, 2), (7, 3), (32, 10)])
def test_balanced_cross_entropy_matches_naive_loop(b, k, dtype):
    g = torch.Generator().manual_seed(b * 10 + k)
    logits = torch.randn(b, k, generator=g, dtype=dtype)
    labels = torch.randint(k, (b,), generator=g)
    sizes = torch.randint(1, 50, (k,), generator=g)
    loss = balanced_cross_entropy(logits, labels, sizes)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert loss.item() == pytest.approx(naive_balanced_cross_entropy(logits, labels, sizes), rel=tol, abs=tol)


def test_balanced_cross_entropy_over_the_data_set_is_the_class_uniform_average():
    """What the weights stand for: sampling uniformly over pseudo-classes, then over items in the class."""
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 30 + [1] * 3 + [2] * 7)
    logits = torch.randn(40, 4, generator=g, dtype=torch.float64)  # class 3 is empty
    sizes = torch.bincount(labels, minlength=4)
    per_item = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    class_uniform = torch.stack([per_item[labels == c].mean() for c in range(3)]).mean()
    torch.testing.assert_close(balanced_cross_entropy(logits, labels, sizes), class_uniform)
    assert not torch.allclose(per_item.mean(), class_uniform)  # the plain mean is dominated by class 0


# --- the method ------------------------------------------------------------------------------------------

def table_data(n=96, d=12):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, d, generator=g) * 4
    x = centers[torch.arange(n) % 4] + torch.randn(n, d, generator=g)
    return Dataset(x, None, [], "table", "tiny")


def build(data, **options):
    cfg = TrainConfig(method="deepcluster", encoder="mlp", epochs=1, batch_size=32, device="cpu",
                      encoder_options={"widths": [32, 16]}, method_options=options)
    return build_method(cfg, data)


def test_relabel_assigns_every_item_and_resets_the_head():
    data = table_data()
    torch.manual_seed(0)
    method = build(data, num_clusters=100, pca_dim=8)
    with torch.no_grad():
        method.head.weight.fill_(1.0)
    method.on_epoch_start(0, data)
    k = 96 // 2  # 100 clusters clamped to N // 2
    assert int(method.active_clusters) == k
    labels = method.pseudo_labels
    assert labels.shape == (96,) and labels.dtype == torch.int64
    assert 0 <= int(labels.min()) and int(labels.max()) < k
    assert torch.equal(method.cluster_sizes, torch.bincount(labels, minlength=100))
    assert int(method.cluster_sizes.sum()) == 96 and int((method.cluster_sizes[:k] > 0).sum()) == k  # re-seeded
    assert "pseudo_labels" in method.state_dict() and "cluster_sizes" in method.state_dict()
    # The head was re-initialized as in the paper: N(0, 0.01) weights, zero bias.
    head = method.head.weight.detach()
    assert 0.005 < float(head.std()) < 0.015 and float(method.head.bias.detach().abs().max()) == 0.0
    assert method.training  # the hook restored train mode


def test_labels_follow_the_kmeans_of_whitened_features():
    """With a backbone that is the identity on well-separated blobs, pseudo-labels are the blobs."""
    data = table_data()
    method = build(data, num_clusters=4, pca_dim=3)  # the 4 centres span 3 dimensions
    truth = torch.arange(96) % 4
    method.backbone = IdentityBackbone(data.x.shape[1])
    method.on_epoch_start(0, data)
    assert adjusted_rand_score(truth.numpy(), method.pseudo_labels.numpy()) == 1.0


class IdentityBackbone(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.num_features = d
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.scale


def test_relabel_happens_once_per_epoch_and_survives_a_checkpoint():
    data = table_data()
    torch.manual_seed(0)
    method = build(data, num_clusters=10)
    method.on_epoch_start(0, data)
    labels, head = method.pseudo_labels.clone(), method.head.weight.detach().clone()
    method.on_epoch_start(0, data)  # the first step after resuming mid-epoch: nothing changes
    assert torch.equal(method.pseudo_labels, labels) and torch.equal(method.head.weight, head)

    fresh = build(data, num_clusters=10)  # a resumed run: built before it knows N, then loaded
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.pseudo_labels, labels) and int(fresh.labelled_epoch) == 0
    fresh.on_epoch_start(0, data)
    assert torch.equal(fresh.pseudo_labels, labels) and torch.equal(fresh.head.weight, head)

    method.on_epoch_start(1, data)  # a new epoch: new k-means, new head
    assert not torch.equal(method.head.weight, head)


def test_loss_is_the_balanced_cross_entropy_of_the_head():
    data = table_data()
    torch.manual_seed(0)
    method = build(data, num_clusters=10)
    method.on_epoch_start(0, data)
    method.views = nn.Identity()  # no augmentation: the reference sees the same inputs
    index = torch.arange(20, 52)
    x = data.x[index]
    torch.manual_seed(1)
    out = method(x, index)
    logits = method.head(method.backbone(x))[:, :10]
    expected = naive_balanced_cross_entropy(logits.detach(), method.pseudo_labels[index], method.cluster_sizes)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert 0.0 <= out.logs["pseudo_acc"] <= 1.0
    out.loss.backward()
    assert method.head.weight.grad is not None and method.head.weight.grad.abs().sum() > 0


def test_forward_before_labels_and_bad_options_are_clear_errors():
    data = table_data()
    method = build(data)
    with pytest.raises(SelfmetaError, match="on_epoch_start"):
        method(data.x[:4], torch.arange(4))
    with pytest.raises(SelfmetaError, match="num_clusters"):
        build(data, num_clusters=1)
    with pytest.raises(SelfmetaError, match="pca_dim"):
        build(data, pca_dim=0)
    with pytest.raises(SelfmetaError, match="at least 4 items"):
        method.on_epoch_start(0, Dataset(data.x[:3], None, [], "table", "three"))
