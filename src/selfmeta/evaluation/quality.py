"""Label-free signals of feature quality, on a fixed unlabeled sample of the training items.

- RankMe (Garrido et al., ICML 2023): the exponential of the entropy of the normalized singular values of
  the (N, D) embeddings, a smooth effective rank: 1 for a rank-1 matrix, min(N, D) when every singular value
  is equal. Across the hyper-parameters of one method it tracks linear-probe accuracy (the paper's finding;
  BENCHMARKS.md checks it on this project's data), so it can choose settings where there are no labels.
- LiDAR (Thilak et al., ICLR 2024): the same effective rank, of the linear discriminant matrix
  Sigma_w^(-1/2) Sigma_b Sigma_w^(-1/2) with each item's views as one class: directions count only where
  items differ more than the views of one item do. Where RankMe rewards any spread (a network that has
  hardly learned keeps the high rank of its random start), LiDAR asks the spread to survive the views.
- Alignment and uniformity (Wang & Isola, ICML 2020), on L2-normalized features: alignment is the mean
  squared distance between two views of the same item (lower: the views agree), uniformity the log of the
  mean Gaussian potential between different items (lower: the items spread over the sphere).
- View retrieval: how often an item's second view is the nearest (cosine) of all the sample's second views
  to its first view, and the reverse, averaged: alignment and spread in one number, from 1/N for a
  collapsed encoder to 1 for one whose views of an item agree better than any two items do.

The signals are pure functions of feature matrices; :class:`QualityProbe` draws the sample and the views once
(a fixed seed, outside the training random stream) so that the values of one run, and of different runs on
the same data, are comparable.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

QUALITY_KEYS = ("rankme", "lidar", "alignment", "uniformity", "retrieval")
LIDAR_ITEMS, LIDAR_VIEWS = 256, 8   # LiDAR's classes (the first items of the sample) and views of each


def effective_rank(values: torch.Tensor, eps: float = 1e-7) -> float:
    """exp(-sum_k p_k log p_k) with p_k = v_k / ||v||_1 + eps, for non-negative values v (K,)."""
    values = values.double().clamp_min(0)
    p = values / values.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """The effective rank of the singular values of z (N, D)."""
    return effective_rank(torch.linalg.svdvals(z.double()), eps)


def lidar(z: torch.Tensor, delta: float = 1e-4, eps: float = 1e-7) -> float:
    """The effective rank of the eigenvalues of Sigma_w^(-1/2) Sigma_b Sigma_w^(-1/2) for z (N, Q, D): Q views
    of N items, each item a class. Sigma_b: covariance of the items' mean embeddings; Sigma_w: pooled
    covariance of the views around their item's mean, plus delta x its mean variance on the diagonal (the
    paper adds delta I; relative here, so that the value does not depend on the features' scale)."""
    z = z.double()
    n, q, d = z.shape
    means = z.mean(1)                                                     # (N, D)
    between = torch.cov(means.T).reshape(d, d)                            # (D, D)
    spread = (z - means[:, None]).reshape(n * q, d)
    within = spread.T @ spread / (n * (q - 1))
    within = within + delta * within.diagonal().mean().clamp_min(1e-12) * torch.eye(d, dtype=z.dtype)
    values, vectors = torch.linalg.eigh(within)
    root = vectors @ torch.diag(values.clamp_min(1e-300).rsqrt()) @ vectors.T   # Sigma_w^(-1/2)
    return effective_rank(torch.linalg.eigvalsh(root @ between @ root), eps)


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> float:
    """E ||f(x) - f(x')||^alpha over the rows of z1, z2 (N, D): two views of the same N items."""
    a, b = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    return float((a - b).norm(dim=1).pow(alpha).mean())


def retrieval(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """Top-1 accuracy of finding row i of z2 among all rows of z2 from row i of z1 by cosine similarity, and
    of z1 from z2, averaged; z1, z2 (N, D): two views of the same N items."""
    sim = F.normalize(z1.double(), dim=1) @ F.normalize(z2.double(), dim=1).T    # (N, N)
    rows = torch.arange(len(sim))
    return float(((sim.argmax(1) == rows).double().mean() + (sim.argmax(0) == rows).double().mean()) / 2)


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log E exp(-t ||f(x) - f(y)||^2) over the pairs of different rows of z (N, D)."""
    a = F.normalize(z.double(), dim=1)
    return float(torch.pdist(a).pow(2).mul(-t).exp().mean().log())


class QualityProbe:
    """The label-free signals of a training method's backbone on ``size`` items of ``data`` fixed by ``seed``.

    ``probe(method)`` embeds the sample as it is (RankMe, uniformity) and as two views drawn from a fixed
    seed (alignment; skipped where the method has no views, or with ``with_views=False``), in eval mode, without touching the caller's
    random stream or the method's train/eval state.
    """

    def __init__(self, data: Any, size: int = 1024, seed: int = 0, batch_size: int = 256) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.index = torch.randperm(len(data), generator=generator)[:size].sort().values
        self.items = data.take(self.index)
        self.spec = data.spec
        self.seed, self.batch_size = seed, batch_size

    @torch.no_grad()
    def __call__(self, method: torch.nn.Module, device: torch.device, channels_last: bool = True,
                 autocast: Any = None, with_views: bool = True, views: Any = None) -> dict[str, float]:
        """``views``: the views to measure with (default: the method's own); ``with_views=False``: RankMe and
        uniformity only."""
        was_training = method.training
        method.eval()
        views = (views or getattr(method, "views", None)) if with_views else None
        forks = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=forks), autocast or nullcontext():
                torch.manual_seed(self.seed)
                plain, first, second = [], [], []
                for start in range(0, len(self.index), self.batch_size):
                    x = self.spec.to_model(self.items[start:start + self.batch_size], device, channels_last)
                    plain.append(method.backbone(x).float())
                    if views is not None:
                        first.append(method.backbone(views(x)).float())
                        second.append(method.backbone(views(x)).float())
                if views is not None:  # LiDAR: LIDAR_VIEWS views of each of the first LIDAR_ITEMS items
                    x = self.spec.to_model(self.items[:LIDAR_ITEMS], device, channels_last)
                    x = x.repeat_interleave(LIDAR_VIEWS, dim=0)           # (N * Q, ...): one pass for all views
                    per_item = torch.cat([method.backbone(views(x[i:i + self.batch_size])).float()
                                          for i in range(0, len(x), self.batch_size)])
                    classes = per_item.cpu().reshape(-1, LIDAR_VIEWS, per_item.shape[-1])
        finally:
            method.train(was_training)
        z = torch.cat(plain).cpu()
        out = {"rankme": rankme(z), "uniformity": uniformity(z)}
        if first:
            first, second = torch.cat(first).cpu(), torch.cat(second).cpu()
            out["alignment"], out["retrieval"] = alignment(first, second), retrieval(first, second)
            out["lidar"] = lidar(classes)
        return out
