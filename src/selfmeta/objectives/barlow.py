"""Barlow Twins: drive the cross-correlation of two views' embeddings to the identity (Zbontar et al. 2021)."""

from __future__ import annotations

import torch


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The (d, d) cross-correlation matrix of two batches of embeddings (Zbontar et al. 2021, eq. 2).

    Args:
        z1, z2: (N, d) embeddings of two views of the same N items (the whole, global batch).
        eps: added to the variance, as the affine-free BatchNorm of the official code does.

    Each dimension is standardized over the batch, a = (z - mean_n z) / sqrt(var_n z + eps) with the biased
    variance, then C_ij = sum_n a1_ni a2_nj / N: C_ij is (up to eps) the Pearson correlation of
    dimension i of view 1 with dimension j of view 2, in [-1, 1].
    """
    n = z1.shape[0]

    def standardize(z: torch.Tensor) -> torch.Tensor:                  # (N, d) -> (N, d)
        z = z - z.mean(dim=0)
        return z / torch.sqrt(z.pow(2).mean(dim=0) + eps)

    return standardize(z1).T @ standardize(z2) / n                     # (d, d)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins' redundancy-reduction loss (Zbontar et al. 2021, eq. 1).

    Args:
        z1, z2: (N, d) embeddings of two views of the same N items; use the global batch (the statistics are
            over the batch, so each process's share alone gives a different loss).
        lambd: weight of the off-diagonal (redundancy-reduction) term; the paper's 5e-3 is for d = 8192.
        eps: see :func:`cross_correlation`.

    With C = cross_correlation(z1, z2):  loss = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2.
    The invariance term has d summands and the redundancy term d (d - 1): for small d, lambd ~ 1/d keeps
    their balance.
    """
    c = cross_correlation(z1, z2, eps)                                 # (d, d)
    diagonal = torch.diagonal(c)                                       # (d,)
    on_diagonal = (1 - diagonal).pow(2).sum()
    off_diagonal = c.pow(2).sum() - diagonal.pow(2).sum()
    return on_diagonal + lambd * off_diagonal
