"""TS2Vec's hierarchical contrastive loss (Yue et al., "TS2Vec: Towards Universal Representation of Time
Series", AAAI 2022), as pure functions of per-step representations.

Two views of a batch, ``z1`` and ``z2`` (B, T, D), hold the representations of the same time steps seen in
two overlapping crops. At every scale (T steps, then max-pooled by 2 until one step remains):

- instance-wise contrast: at each step t, item i's two views are positives, the other items' views at t
  are negatives (B - 1 pairs per anchor, both directions);
- temporal contrast: within each item, the two views of step t are positives, the item's other steps
  (in both views) are negatives.

Similarities are plain dot products (no normalization, no temperature), as in the paper's code. The loss
is the mean over scales of ``alpha * instance + (1 - alpha) * temporal`` (temporal from scale
``temporal_unit`` on; the last, single-step scale has only the instance term).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _off_diagonal_logits(sim: torch.Tensor) -> torch.Tensor:
    """(..., M, M) similarities -> (..., M, M - 1): each row without its diagonal entry."""
    return torch.tril(sim, diagonal=-1)[..., :-1] + torch.triu(sim, diagonal=1)[..., 1:]


def instance_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """z1, z2 (B, T, D) -> scalar: at each step, each item's other view against the other items' views."""
    b = z1.shape[0]
    if b == 1:
        return z1.new_zeros(())
    z = torch.cat([z1, z2], dim=0).transpose(0, 1)                    # (T, 2B, D)
    nll = -F.log_softmax(_off_diagonal_logits(z @ z.transpose(1, 2)), dim=-1)   # (T, 2B, 2B - 1)
    i = torch.arange(b, device=z1.device)
    # Row i's positive, item B + i, sits in column B + i - 1 once the diagonal is removed; row B + i's in column i.
    return (nll[:, i, b + i - 1].mean() + nll[:, b + i, i].mean()) / 2


def temporal_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """z1, z2 (B, T, D) -> scalar: within each item, a step's other view against the item's other steps."""
    t = z1.shape[1]
    if t == 1:
        return z1.new_zeros(())
    z = torch.cat([z1, z2], dim=1)                                    # (B, 2T, D)
    nll = -F.log_softmax(_off_diagonal_logits(z @ z.transpose(1, 2)), dim=-1)   # (B, 2T, 2T - 1)
    s = torch.arange(t, device=z1.device)
    return (nll[:, s, t + s - 1].mean() + nll[:, t + s, s].mean()) / 2


def hierarchical_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 0.5,
                                  temporal_unit: int = 0) -> torch.Tensor:
    """z1, z2 (B, T, D) -> scalar: the instance and temporal losses at every max-pooling scale, averaged."""
    loss, scales = z1.new_zeros(()), 0
    while z1.shape[1] > 1:
        if alpha != 0:
            loss = loss + alpha * instance_contrastive_loss(z1, z2)
        if scales >= temporal_unit and alpha != 1:
            loss = loss + (1 - alpha) * temporal_contrastive_loss(z1, z2)
        scales += 1
        z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)
        z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)
    if z1.shape[1] == 1:
        if alpha != 0:
            loss = loss + alpha * instance_contrastive_loss(z1, z2)
        scales += 1
    return loss / scales
