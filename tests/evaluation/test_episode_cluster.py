"""Few-shot clustering: batched k-means against scikit-learn's, the per-episode scores against scikit-learn's
metrics, the balanced soft k-means, and the protocol from the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from selfmeta.evaluation.episode_cluster import contingency, hungarian_accuracy, mutual_information_scores, score_clusters
from selfmeta.evaluation.metrics import cluster_accuracy
from selfmeta.objectives.kmeans import batched_kmeans, soft_kmeans


def blobs(e: int, k: int, per: int, spread: float, seed: int = 0) -> torch.Tensor:
    """(E, k*per, 4) points of E problems, class-major: class j of problem e around its own centre."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(e, k, 1, 4, generator=g, dtype=torch.float64) * 3
    return (centres + spread * torch.randn(e, k, per, 4, generator=g, dtype=torch.float64)).flatten(1, 2)


def test_batched_kmeans_finds_the_partition_and_inertia_of_scikit_learn():
    x = blobs(6, 4, 5, spread=0.3)
    ours = batched_kmeans(x, 4, restarts=10)                                   # (6, 20)
    truth = np.repeat(np.arange(4), 5)
    for e in range(6):
        theirs = KMeans(4, n_init=10, random_state=0).fit(x[e].numpy())
        assert cluster_accuracy(theirs.labels_, ours[e].numpy()) == 1.0       # the same partition
        assert cluster_accuracy(truth, ours[e].numpy()) == 1.0
    # overlapping data: both find local optima (scikit-learn seeds greedily); ours are as good on the whole
    x = blobs(6, 4, 5, spread=2.0, seed=1)
    ours = batched_kmeans(x, 4, restarts=10)
    ratios = []
    for e in range(6):
        centroids = torch.stack([x[e][ours[e] == j].mean(0) for j in range(4) if (ours[e] == j).any()])
        inertia = float(torch.cdist(x[e], centroids).pow(2).min(1).values.sum())
        ratios.append(inertia / KMeans(4, n_init=10, random_state=0).fit(x[e].numpy()).inertia_)
    assert max(ratios) < 1.05 and np.mean(ratios) < 1.01

def test_scores_against_scikit_learn():
    g = np.random.default_rng(0)
    clusters = torch.from_numpy(g.integers(0, 5, size=(40, 25)))
    clusters[0] = 0                                                            # a single cluster: NMI 0
    clusters[1] = torch.arange(5).repeat_interleave(5)                         # perfect
    scores = score_clusters(clusters, 5)
    truth = np.repeat(np.arange(5), 5)
    for e in range(40):
        assert scores["accuracy"][e] == pytest.approx(cluster_accuracy(truth, clusters[e].numpy()))
        assert scores["nmi"][e] == pytest.approx(normalized_mutual_info_score(truth, clusters[e].numpy()), abs=1e-12)
    assert scores["accuracy"][1] == 1.0 and scores["nmi"][1] == pytest.approx(1.0) and scores["nmi"][0] == 0.0
    # a hand-worked case: clusters [0,0,1 | 1,1,1] against classes [0,0,0 | 1,1,1]
    counts = contingency(torch.tensor([[0, 0, 1, 1, 1, 1]]), torch.tensor([[0, 0, 0, 1, 1, 1]]), 2)
    assert counts.tolist() == [[[2.0, 0.0], [1.0, 3.0]]]
    assert float(hungarian_accuracy(counts)[0]) == pytest.approx(5 / 6)
    assert float(mutual_information_scores(counts)[0]) == pytest.approx(
        normalized_mutual_info_score([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]))


@pytest.mark.parametrize("balanced", [False, True])
def test_soft_kmeans_converges_to_the_classes_and_is_differentiable(balanced):
    x = blobs(3, 3, 4, spread=0.2).requires_grad_(True)
    seeds = x[:, [0, 4, 8]]                                                    # one item of each class
    a, c = soft_kmeans(x, seeds, iters=5, temperature=0.5, balanced=balanced)
    assert a.shape == (3, 12, 3) and torch.allclose(a.sum(-1), torch.ones(3, 12, dtype=a.dtype))
    assert (a.argmax(-1) == torch.arange(3).repeat_interleave(4)).all()
    if balanced:  # equal shares: every cluster holds n / k items' worth of mass
        assert torch.allclose(a.sum(1), torch.full((3, 3), 4.0, dtype=a.dtype), atol=1e-3)
    a[..., 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("how", ["prototype", "balanced"])  # (cosine: directions, not separated here)
def test_every_clustering_of_the_protocol_recovers_separated_classes(how):
    from selfmeta.evaluation.episode_cluster import kmeans_episodes

    features = blobs(1, 12, 5, spread=0.1)[0]                                  # 12 classes x 5 items, class-major
    episodes = torch.stack([torch.randperm(12, generator=torch.Generator().manual_seed(e))[:4] for e in range(3)])
    episodes = episodes.unsqueeze(-1) * 5 + torch.arange(5)                    # (3, 4, 5): 4 classes x 5 items
    scores = score_clusters(kmeans_episodes(features, episodes, how), 4)
    assert scores["accuracy"].min() == 1.0 and scores["nmi"].min() == pytest.approx(1.0)
