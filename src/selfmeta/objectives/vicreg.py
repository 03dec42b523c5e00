"""VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce & LeCun, ICLR 2022)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class VICRegTerms(NamedTuple):
    invariance: torch.Tensor   # s(Z, Z'): mean squared distance of the paired embeddings
    variance: torch.Tensor     # v(Z) + v(Z'): hinge on each dimension's standard deviation
    covariance: torch.Tensor   # c(Z) + c(Z'): squared off-diagonal covariances / d

    def weighted(self, sim_coeff: float, std_coeff: float, cov_coeff: float) -> torch.Tensor:
        """lambda s + mu v + nu c: the loss of :func:`vicreg_loss`."""
        return sim_coeff * self.invariance + std_coeff * self.variance + cov_coeff * self.covariance


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """v(Z) = (1/d) sum_j max(0, gamma - sqrt(Var(z^j) + eps)), Var unbiased over the batch; (N, d) -> ()."""
    std = torch.sqrt(z.var(dim=0) + eps)                               # (d,)
    return F.relu(gamma - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """c(Z) = (1/d) sum_{i != j} Cov(Z)_ij^2, Cov(Z) = (Z - mean)^T (Z - mean) / (N - 1); (N, d) -> ()."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)                                            # (d, d)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> VICRegTerms:
    """The three unweighted terms for two (N, d) batches of paired embeddings (the global batch)."""
    return VICRegTerms(
        invariance=F.mse_loss(z1, z2),                                 # (1 / (N d)) sum_n |z1_n - z2_n|^2
        variance=variance_term(z1, gamma, eps) + variance_term(z2, gamma, eps),
        covariance=covariance_term(z1) + covariance_term(z2),
    )


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """VICReg's loss (Bardes et al. 2022, eq. 6), for (N, d) embeddings z1, z2 of two views of N items.

    loss = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')] with lambda, mu, nu = sim_coeff,
    std_coeff, cov_coeff (paper: 25, 25, 1), where
      s(Z, Z') = (1/N) sum_n |z_n - z'_n|^2 / d                      (invariance, a mean squared error),
      v(Z)     = (1/d) sum_j max(0, gamma - sqrt(Var(z^j) + eps))    (variance, unbiased Var over the batch),
      c(Z)     = (1/d) sum_{i != j} Cov(Z)_ij^2                      (covariance, unbiased).
    This is the paper's equation and Algorithm 1; the authors' repository halves the variance term
    (mean of the two branches instead of their sum), which amounts to std_coeff = 12.5 here.
    Use the global batch: the variance and covariance are statistics over the batch.
    """
    return vicreg_terms(z1, z2, gamma, eps).weighted(sim_coeff, std_coeff, cov_coeff)
