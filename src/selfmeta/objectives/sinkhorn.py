"""Equal-partition pseudo-labels by optimal transport, solved with Sinkhorn-Knopp (SeLa, Asano et al. 2020)."""

from __future__ import annotations

import math

import torch


def sinkhorn(log_probs: torch.Tensor, lam: float = 25.0, iters: int = 100, tol: float = 0.0) -> torch.Tensor:
    """Transport plan Q (N, K) that assigns N items to K clusters in equal shares.

    SeLa (Asano et al., ICLR 2020, eq. 5-7) relaxes "labels that maximize the model's log-likelihood with
    every cluster of size N/K" to an entropy-regularized transport problem

        max_Q  <Q, log P> + (1/lam) H(Q)   s.t.  Q 1_K = 1_N / N,  Q^T 1_N = 1_K / K,

    whose solution is Q = diag(alpha) P^lam diag(beta): the probabilities raised to the power ``lam`` and
    rescaled, row and column in turn, until both marginals hold (Sinkhorn-Knopp; Cuturi 2013). The
    scalings are iterated in the log domain, so P^lam underflowing (log p = -10, lam = 25) is harmless:

        v_j = -log K - logsumexp_i(lam log p_ij + u_i),   u_i = -log N - logsumexp_j(lam log p_ij + v_j).

    The last update is of the rows: every row sums to exactly 1/N; the columns to 1/K up to the
    convergence of the iterations. Labels are ``Q.argmax(1)``. Convergence is fast when the model is
    unsure and slow when it is confident (sharp P^lam): there the column sums after 100 iterations can
    still be a few percent off, while the argmax labels are already nearly balanced.

    Args:
        log_probs: (N, K) log-probabilities of the clusters for every item (log_softmax of the head).
        lam: the inverse regularization; larger follows the model more closely and converges more slowly
            (the paper uses 25).
        iters: the most Sinkhorn iterations (one column and one row update each).
        tol: stop earlier once every column sum is within ``tol`` of 1/K, relatively (checked every 10
            iterations); 0 runs all ``iters``.

    Returns:
        (N, K) float64 plan: non-negative, total mass 1.
    """
    if log_probs.ndim != 2:
        raise ValueError(f"sinkhorn needs (N, K) log-probabilities, got shape {tuple(log_probs.shape)}")
    n, k = log_probs.shape
    scores = lam * log_probs.double()                                   # (N, K) log P^lam
    u = torch.zeros(n, dtype=scores.dtype, device=scores.device)        # (N,) log row scalings
    v = torch.zeros(k, dtype=scores.dtype, device=scores.device)        # (K,) log column scalings
    for i in range(1, iters + 1):
        v = -math.log(k) - torch.logsumexp(scores + u[:, None], dim=0)
        u = -math.log(n) - torch.logsumexp(scores + v[None, :], dim=1)
        if tol > 0 and i % 10 == 0:
            column_error = (math.log(k) + torch.logsumexp(scores + u[:, None] + v[None, :], dim=0)).expm1().abs()
            if float(column_error.max()) <= tol:
                break
    return torch.exp(scores + u[:, None] + v[None, :])
