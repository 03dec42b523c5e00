"""Deep Embedded Clustering's objective (Xie, Girshick & Farhadi, ICML 2016, section 3.1), with a
cluster-size balance term."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


def log_soft_assignment(z: torch.Tensor, centroids: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """log q (B, K): Student's t similarity of every embedding to every centroid (DEC eq. 1),

        q_ij = (1 + |z_i - mu_j|^2 / alpha)^(-(alpha+1)/2) / sum_j' (1 + |z_i - mu_j'|^2 / alpha)^(-(alpha+1)/2),

    computed as a log-softmax of -(alpha+1)/2 log(1 + d^2/alpha) (no underflow for distant centroids).

    Args:
        z: (B, d) embeddings. centroids: (K, d). alpha: degrees of freedom of the t kernel (DEC uses 1).
    """
    d2 = (z.pow(2).sum(1, keepdim=True) - 2 * z @ centroids.T + centroids.pow(2).sum(1)).clamp_min(0)  # (B, K)
    return (-(alpha + 1) / 2 * torch.log1p(d2 / alpha)).log_softmax(dim=1)


def soft_assignment(z: torch.Tensor, centroids: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """q (B, K), rows summing to 1: see :func:`log_soft_assignment`."""
    return log_soft_assignment(z, centroids, alpha).exp()


def target_distribution(q: torch.Tensor, frequency: torch.Tensor | None = None) -> torch.Tensor:
    """DEC's auxiliary target (eq. 3): squares q to sharpen it and divides by the soft cluster frequency,

        p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j'),   f_j = sum_i q_ij.

    Args:
        q: (B, K) soft assignments.
        frequency: (K,) f over all the items the target is normalized with (the global batch when several
            processes train); default q.sum(0).
    """
    f = q.sum(0) if frequency is None else frequency
    weighted = q.pow(2) / f                                   # (B, K)
    return weighted / weighted.sum(1, keepdim=True)


def balance_kl(mean_q: torch.Tensor) -> torch.Tensor:
    """KL(u || mean_q) = sum_j (1/K) log((1/K) / mean_q_j) for the uniform u over K clusters: 0 when the
    average assignment is uniform, large when most items fall in few clusters. mean_q: (K,)."""
    k = mean_q.shape[-1]
    return (-math.log(k) - mean_q.clamp_min(1e-12).log()).mean()


class DECLoss(NamedTuple):
    total: torch.Tensor    # kl + beta * balance, scalar
    kl: torch.Tensor       # mean_i KL(P_i || Q_i)
    balance: torch.Tensor  # KL(uniform || mean_i q_i)


def dec_loss(log_q: torch.Tensor, beta: float = 1.0, all_q: torch.Tensor | None = None) -> DECLoss:
    """KL(P || Q) averaged over the rows, plus ``beta`` times the cluster-size balance term.

        L = (1/B) sum_i sum_j p_ij log(p_ij / q_ij) + beta * KL(u || (1/N) sum_n q_n)

    P is :func:`target_distribution` of Q, computed without gradient (DEC eq. 2-3); the gradient reaches the
    embeddings and the centroids through log q.

    Args:
        log_q: (B, K) log soft assignments of this process's batch.
        beta: weight of the balance term (0 is plain DEC).
        all_q: (N, K) soft assignments of the global batch (gathered from every process, with gradient),
            used for f_j and for the mean assignment; default log_q.exp().
    """
    q = log_q.exp()
    all_q = q if all_q is None else all_q
    with torch.no_grad():
        p = target_distribution(q, all_q.sum(0))                           # (B, K)
    kl = (torch.xlogy(p, p) - p * log_q).sum(1).mean()
    balance = balance_kl(all_q.mean(0))
    return DECLoss(kl + beta * balance, kl, balance)
