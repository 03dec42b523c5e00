"""Few-shot clustering: each episode's items are grouped into N clusters with no label shown, then scored
against their classes (the protocol of Centroid Networks, Huang et al. 2019, and of meta-learned
unsupervised clustering).

Episodes come from the same seeded sampler as the few-shot protocol, N classes by K items each and no
queries. The items of every episode are clustered as batched tensor operations over (E, N*K, F) blocks:

- ``prototype``: k-means on the features as they are (squared Euclidean, scikit-learn's objective);
- ``cosine``: k-means on the L2-normalized features, the geometry contrastive objectives train;
- ``balanced``: balanced k-means, the base learner of ``metacluster`` with a fixed temperature: equal-size
  soft assignments (Sinkhorn) at temperature 0.1 of the episode's spread, 5 steps, the best of 10 k-means++
  seedings. An episode's classes are equally large, and this prior alone is worth many points at 20 ways;
  it scores any run's features the way a metacluster run clusters (0.1 is near the temperature that
  metacluster learned on Omniglot, 0.097);
- ``finetune``: the run's own clustering, for a learner that meta-learned one
  (``MetaCluster.cluster_items``: its balanced soft k-means, on raw items).

Scores per episode: accuracy under the best one-to-one matching of clusters to classes (Hungarian) and
normalized mutual information (arithmetic normalization, scikit-learn's default); mean and 95% interval.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from selfmeta.objectives.kmeans import batched_kmeans, seeded_soft_kmeans

CHUNK = 250  # episodes clustered together (bounds memory: CHUNK * restarts * N*K * F floats)


def contingency(clusters: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(E, n) cluster ids and class ids in [0, k) -> (E, k, k) counts[e, cluster, class]."""
    return F.one_hot(clusters, k).double().transpose(1, 2) @ F.one_hot(labels, k).double()


def hungarian_accuracy(counts: torch.Tensor) -> torch.Tensor:
    """(E, k, k) contingency -> (E,) accuracy under the best one-to-one cluster-to-class matching."""
    out = torch.empty(len(counts), dtype=torch.float64)
    for e, c in enumerate(counts.numpy()):  # scipy solves one assignment at a time; each is k x k, microseconds
        rows, cols = linear_sum_assignment(c, maximize=True)
        out[e] = c[rows, cols].sum() / c.sum()
    return out


def mutual_information_scores(counts: torch.Tensor) -> torch.Tensor:
    """(E, k, k) contingency -> (E,) NMI = I(U; V) / mean(H(U), H(V)), scikit-learn's arithmetic normalization
    (1 where both partitions are a single group, as scikit-learn gives)."""
    p = counts / counts.sum((1, 2), keepdim=True)                               # (E, k, k) joint
    pu, pv = p.sum(2, keepdim=True), p.sum(1, keepdim=True)                     # (E, k, 1), (E, 1, k) marginals
    ratio = torch.where(p > 0, p / (pu * pv).clamp_min(1e-300), torch.ones_like(p))
    mi = (p * ratio.log()).sum((1, 2)).clamp_min(0)
    h_u = -(pu * pu.clamp_min(1e-300).log()).sum((1, 2))
    h_v = -(pv * pv.clamp_min(1e-300).log()).sum((1, 2))
    mean = (h_u + h_v) / 2
    return torch.where(mean > 0, mi / mean.clamp_min(1e-300), torch.ones_like(mi))


def score_clusters(clusters: torch.Tensor, ways: int) -> dict[str, torch.Tensor]:
    """(E, N*K) cluster ids of episodes in class-major layout (item i is of class i // K) -> per-episode
    ``accuracy`` and ``nmi``, each (E,)."""
    e, n = clusters.shape
    labels = torch.arange(ways).repeat_interleave(n // ways).expand(e, -1)
    counts = contingency(clusters.cpu(), labels, ways)
    return {"accuracy": hungarian_accuracy(counts), "nmi": mutual_information_scores(counts)}


BALANCED_TEMPERATURE, BALANCED_ITERS, RESTARTS = 0.1, 5, 10


def kmeans_episodes(features: torch.Tensor, episodes: torch.Tensor, how: str, seed: int = 0) -> torch.Tensor:
    """features (M, F), episodes (E, N, K) item indices -> (E, N*K) cluster ids (N clusters each) by ``how``:
    ``prototype`` (k-means), ``cosine`` (k-means of the normalized features) or ``balanced`` (see above)."""
    e, ways, shots = episodes.shape
    generator = torch.Generator().manual_seed(seed)
    out = []
    for block in episodes.split(CHUNK):
        x = features[block.flatten(1)].float()                                  # (e, N*K, F)
        if how == "balanced":
            out.append(seeded_soft_kmeans(x, ways, BALANCED_ITERS, BALANCED_TEMPERATURE, generator, RESTARTS).argmax(-1))
        else:
            out.append(batched_kmeans(F.normalize(x, dim=-1) if how == "cosine" else x, ways, RESTARTS, seed=seed))
    return torch.cat(out)


def learner_cluster_episodes(cluster_items: Callable[[torch.Tensor, int], torch.Tensor],
                             items: Callable[[torch.Tensor], torch.Tensor], episodes: torch.Tensor,
                             chunk: int = 50) -> torch.Tensor:
    """A learner's own clustering on raw items, ``chunk`` episodes at a time -> (E, N*K) cluster ids."""
    out = []
    for block in episodes.split(chunk):
        x = items(block.flatten())                                              # (e*N*K, ...)
        out.append(cluster_items(x.reshape(len(block), -1, *x.shape[1:]), block.shape[1]).cpu())
    return torch.cat(out)


def summarize_scores(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per-episode scores -> each one's mean and the half-width of its 95% interval (``<name>_ci95``)."""
    out = {}
    for name, values in scores.items():
        e = values.numel()
        std = float(values.double().std()) if e > 1 else 0.0
        out[name] = float(values.double().mean())
        out[f"{name}_ci95"] = 1.96 * std / math.sqrt(e)
    return out

