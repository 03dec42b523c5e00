"""k-means as a pure batched torch function, and the PCA whitening DeepCluster applies before it.

DeepCluster (Caron et al., ECCV 2018, section 3.2 and its faiss implementation) clusters PCA-whitened,
L2-normalized features with Lloyd's k-means and re-seeds an empty cluster by splitting a non-empty one:
its centroid is copied with a small symmetric perturbation. Everything here is a function of tensors
and a seed: no process groups and no device choice inside (the computation runs where ``x`` lives).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

SPLIT_EPS = 1.0 / 1024  # faiss's relative perturbation when an empty cluster takes half of another


class KMeansResult(NamedTuple):
    centroids: torch.Tensor   # (k, d)
    labels: torch.Tensor      # (N,) int64 in [0, k): the nearest centroid of every point
    inertia: float            # sum_i |x_i - c_{labels_i}|^2, scikit-learn's ``inertia_``
    reseeded: int             # how many times an empty cluster was re-seeded
    iterations: int           # Lloyd iterations run (fewer than ``iters`` once the labels stop changing)


def pca_whiten(x: torch.Tensor, dim: int, rel_tol: float = 1e-9) -> torch.Tensor:
    """Project ``x`` (N, D) on its top principal components and scale each to unit variance.

    Returns (N, d) in x's dtype with d = min(dim, number of components whose variance exceeds
    ``rel_tol`` times the largest): directions without variance (dead units, N < D) are dropped rather
    than blown up. The covariance of the output is the identity:

        y = (x - mean) U_d diag(lambda_d)^(-1/2),   cov(x) = U diag(lambda) U^T.
    """
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"pca_whiten needs (N >= 2, D) data, got shape {tuple(x.shape)}")
    xd = x.double()
    centred = xd - xd.mean(0, keepdim=True)                      # (N, D)
    cov = centred.T @ centred / (len(x) - 1)                     # (D, D)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)           # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    top = float(eigenvalues[0].clamp_min(0))
    rank = int((eigenvalues > rel_tol * top).sum()) if top > 0 else 0
    d = max(1, min(dim, rank))                                   # a constant input keeps one (zero) column
    scale = eigenvalues[:d].clamp_min(rel_tol * top if top > 0 else 1.0).rsqrt()
    return (centred @ eigenvectors[:, :d] * scale).to(x.dtype)   # (N, d)


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N, d), (k, d) -> (N, k) squared Euclidean distances |x_i - c_j|^2 (clamped at 0 against rounding)."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ centroids.T + centroids.pow(2).sum(1)).clamp_min(0)


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of every point: (labels (N,) int64, squared distance (N,)), ``chunk`` rows at a time
    so that the (chunk, k) distance matrix bounds the memory."""
    dist, labels = zip(*(squared_distances(x[i : i + chunk], centroids).min(1) for i in range(0, len(x), chunk)))
    return torch.cat(labels), torch.cat(dist)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each new centroid is a point drawn with probability
    proportional to its squared distance to the nearest centroid so far. (k, d); one step per centroid."""
    n = len(x)
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centroids = [x[first]]                                            # list of (1, d)
    closest = squared_distances(x, centroids[0]).squeeze(1)           # (N,)
    for _ in range(1, k):
        if float(closest.sum()) > 0:
            pick = torch.multinomial(closest.double(), 1, generator=generator)
        else:  # every point coincides with a centroid already: any point will do
            pick = torch.randint(n, (1,), generator=generator, device=x.device)
        centroids.append(x[pick])
        closest = torch.minimum(closest, squared_distances(x, centroids[-1]).squeeze(1))
    return torch.cat(centroids)


def _split_for_empty(
    centroids: torch.Tensor, sizes: torch.Tensor, empty: list[int], generator: torch.Generator
) -> None:
    """Re-seed each empty cluster in place, as faiss does for DeepCluster: pick a cluster m with
    probability proportional to (size_m - 1), copy its centroid, perturb the two copies symmetrically by
    a factor (1 +- eps) in alternating coordinates, and let them share m's points."""
    d = centroids.shape[1]
    sign = torch.ones(d, device=centroids.device, dtype=centroids.dtype)
    sign[1::2] = -1
    for j in empty:  # a loop over the (few) empty clusters, not over points
        weights = (sizes - 1).clamp_min(0).double()
        if float(weights.sum()) > 0:
            m = int(torch.multinomial(weights, 1, generator=generator))
        else:
            m = int(sizes.argmax())
        centroids[j] = centroids[m] * (1 + SPLIT_EPS * sign)
        centroids[m] = centroids[m] * (1 - SPLIT_EPS * sign)
        sizes[j] = sizes[m] // 2
        sizes[m] -= sizes[j]


def kmeans(
    x: torch.Tensor, k: int, iters: int = 20, seed: int = 0, init: str | torch.Tensor = "k-means++",
    chunk: int = 65536,
) -> KMeansResult:
    """Lloyd's k-means of ``x`` (N, d) into ``k`` clusters.

    Minimizes the inertia sum_i min_j |x_i - c_j|^2 by alternating (1) assignment of every point to its
    nearest centroid and (2) c_j = mean of the points assigned to j. A cluster left empty by (1) is
    re-seeded by splitting a populated one (see ``_split_for_empty``), so all k clusters stay in use.
    Stops after ``iters`` iterations or once the assignment no longer changes.

    Args:
        x: (N, d) points, N >= k. Float32 is enough for normalized features; the sums are accumulated in x's dtype.
        k: number of clusters.
        iters: maximum Lloyd iterations (DeepCluster's faiss setting is 20).
        seed: seeds the initialization and the re-seeding draws (same seed, same input: same result).
        init: "k-means++", "random" (k distinct points) or a (k, d) tensor of initial centroids.
        chunk: rows per distance block; memory is O(chunk * k).
    """
    if x.ndim != 2:
        raise ValueError(f"kmeans needs (N, d) points, got shape {tuple(x.shape)}")
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"kmeans needs 1 <= k <= N, got k={k} for N={n}")
    generator = torch.Generator(device=x.device).manual_seed(seed)
    if isinstance(init, torch.Tensor):
        if init.shape != (k, d):
            raise ValueError(f"initial centroids must have shape {(k, d)}, got {tuple(init.shape)}")
        centroids = init.to(x).clone()
    elif init == "k-means++":
        centroids = kmeans_plus_plus(x, k, generator)
    elif init == "random":
        centroids = x[torch.randperm(n, generator=generator, device=x.device)[:k]].clone()
    else:
        raise ValueError(f"unknown init {init!r}; valid: 'k-means++', 'random' or a tensor")

    reseeded, previous, done = 0, None, 0
    for done in range(1, iters + 1):
        labels, _ = assign(x, centroids, chunk)
        if previous is not None and torch.equal(labels, previous):
            done -= 1  # the previous update was already a fixed point
            break
        sizes = torch.bincount(labels, minlength=k)                            # (k,)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)            # (k, d)
        populated = sizes > 0
        centroids = torch.where(populated[:, None], sums / sizes.clamp_min(1)[:, None].to(x.dtype), centroids)
        empty = (~populated).nonzero().flatten().tolist()
        if empty:
            _split_for_empty(centroids, sizes, empty, generator)
            reseeded += len(empty)
            labels = None  # the split changed the centroids: never stop on this assignment
        previous = labels
    labels, dist = assign(x, centroids, chunk)
    return KMeansResult(centroids, labels, float(dist.double().sum()), reseeded, done)


# --- many small problems at once: one k-means per few-shot episode ------------------------------------------

def batched_squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(B, n, d), (B, k, d) -> (B, n, k) squared Euclidean distances, clamped at 0 against rounding."""
    return (x.pow(2).sum(-1, keepdim=True) - 2 * x @ centroids.transpose(1, 2)
            + centroids.pow(2).sum(-1).unsqueeze(1)).clamp_min(0)


def batched_kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding of B problems at once: (B, n, d) -> (B, k) indices of the items chosen as the
    initial centroids. One step per centroid, each a batched draw (``torch.multinomial`` over the rows of
    (B, n) squared distances to the nearest centroid so far); ``generator`` lives on x's device."""
    b, n, _ = x.shape
    rows = torch.arange(b, device=x.device)
    picks = [torch.randint(n, (b,), generator=generator, device=x.device)]       # list of (B,)
    closest = (x - x[rows, picks[0]].unsqueeze(1)).pow(2).sum(-1)                # (B, n)
    for _ in range(1, k):
        weights = closest.double()
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))  # all covered
        picks.append(torch.multinomial(weights, 1, generator=generator).squeeze(1))
        closest = torch.minimum(closest, (x - x[rows, picks[-1]].unsqueeze(1)).pow(2).sum(-1))
    return torch.stack(picks, 1)


def gather_items(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, n, d) items, (B, k) indices -> (B, k, d) the chosen items (differentiable in x)."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def batched_kmeans(x: torch.Tensor, k: int, restarts: int = 10, iters: int = 50, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means of E small problems at once (one per episode): (E, n, d) -> (E, n) labels in [0, k).

    As scikit-learn's ``KMeans(k, n_init=restarts)``: each problem is solved from ``restarts`` k-means++
    seedings and the solution with the lowest inertia is kept. All E * restarts problems iterate together as
    (B, n, k) tensor operations; a cluster left empty keeps its previous centroid. ``iters`` Lloyd steps are
    always run (on a few dozen points they converge in well under 50, and a converged step changes nothing).
    """
    e, n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"kmeans needs 1 <= k <= n, got k={k} for n={n}")
    generator = torch.Generator(device=x.device).manual_seed(seed)
    xs = x.repeat_interleave(restarts, 0)                                       # (B, n, d), B = E * restarts
    centroids = gather_items(xs, batched_kmeans_plus_plus(xs, k, generator))    # (B, k, d)
    for _ in range(iters):
        labels = batched_squared_distances(xs, centroids).argmin(-1)            # (B, n)
        onehot = torch.nn.functional.one_hot(labels, k).to(xs.dtype)            # (B, n, k)
        sizes = onehot.sum(1)                                                   # (B, k)
        sums = onehot.transpose(1, 2) @ xs                                      # (B, k, d)
        centroids = torch.where(sizes.unsqueeze(-1) > 0, sums / sizes.clamp_min(1).unsqueeze(-1), centroids)
    dist = batched_squared_distances(xs, centroids)                             # (B, n, k)
    inertia, labels = dist.min(-1)                                              # (B, n)
    best = inertia.sum(1).view(e, restarts).argmin(1)                           # (E,)
    return labels.view(e, restarts, n)[torch.arange(e, device=x.device), best]


def soft_kmeans(x: torch.Tensor, centroids: torch.Tensor, iters: int, temperature: torch.Tensor | float,
                balanced: bool = False, sinkhorn_iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable k-means of B problems from initial centroids: (B, n, d), (B, k, d) -> assignments
    (B, n, k) (rows sum to 1) and the final centroids (B, k, d).

    Each of the ``iters`` steps assigns softly, a_ij = softmax_j(-|x_i - c_j|^2 / temperature), and moves
    every centroid to the a-weighted mean of the points; the gradient flows through every step into ``x``
    and ``temperature`` (the base learner of meta-learned clustering: Centroid Networks, Huang et al. 2019).
    With ``balanced`` the assignment of each step is the entropic optimal transport of the points to k
    clusters of equal size (log-domain Sinkhorn-Knopp, ``sinkhorn_iters`` row and column updates), the prior
    that a few-shot episode's classes are equally large. The assignments returned are those of the last
    step's centroids.
    """
    b, n, _ = x.shape
    k = centroids.shape[1]

    def assignments(c: torch.Tensor) -> torch.Tensor:
        logits = -batched_squared_distances(x, c) / temperature                  # (B, n, k)
        if not balanced:
            return logits.softmax(-1)
        u = torch.zeros(b, n, 1, dtype=logits.dtype, device=x.device)            # log row scalings
        for _ in range(sinkhorn_iters):
            v = math.log(n / k) - torch.logsumexp(logits + u, dim=1, keepdim=True)  # columns sum to n / k
            u = -torch.logsumexp(logits + v, dim=2, keepdim=True)                   # rows sum to 1
        return (logits + u + v).exp()

    for _ in range(iters):
        a = assignments(centroids)
        centroids = a.transpose(1, 2) @ x / a.sum(1).unsqueeze(-1).clamp_min(1e-8)  # (B, k, d)
    return assignments(centroids), centroids


def seeded_soft_kmeans(features: torch.Tensor, k: int, iters: int, temperature: torch.Tensor | float,
                       generator: torch.Generator, restarts: int = 1, balanced: bool = True) -> torch.Tensor:
    """Soft k-means of B problems from ``restarts`` k-means++ seedings each: (B, n, d) -> soft assignments
    (B, n, k) of the seeding whose final objective sum_ij a_ij |x_i - c_j|^2 is lowest (differentiable in
    ``features`` and ``temperature`` through the kept seeding).

    ``temperature`` is relative to each problem's spread, its mean squared distance to its mean, so that the
    softness does not depend on the scale of the features. The seeds are items picked by k-means++ on the CPU
    (where ``generator`` lives), then taken from ``features`` with their gradient.
    """
    b, n, _ = features.shape
    x = features.repeat_interleave(restarts, 0)                                  # (B*R, n, d)
    seeds = gather_items(x, batched_kmeans_plus_plus(x.detach().cpu(), k, generator).to(x.device))
    spread = (x - x.mean(1, keepdim=True)).pow(2).sum(-1).mean(1).detach().clamp_min(1e-8)  # (B*R,)
    a, c = soft_kmeans(x, seeds, iters, temperature * spread.view(-1, 1, 1), balanced)
    if restarts == 1:
        return a
    objective = (a * batched_squared_distances(x, c)).sum((1, 2)).view(b, restarts)
    return a.view(b, restarts, n, k)[torch.arange(b, device=a.device), objective.argmin(1)]
