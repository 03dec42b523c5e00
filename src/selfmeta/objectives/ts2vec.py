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


_SPREAD = 60.0  # softmax weights below e^-60 of the row's largest count as e^-60 (see _LogSumExpOthers)


def _softmax_weights_(sim: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """In place on ``sim`` (G, M, M): exp(sim - shift) with the diagonal zeroed, every exponent raised to at
    least -``_SPREAD``. Unnormalized dot products spread over hundreds of units, so most weights would
    underflow into subnormal floats, and x86 computes with subnormals ~30x slower (the backward matmul of an
    (8, 4000, 4000) block took 45 s instead of 1 s). The floor moves the row's sum by under M * e^-60 of
    its largest term: nothing in float32."""
    sim.sub_(shift.unsqueeze(-1)).clamp_(min=-_SPREAD).exp_()
    sim.diagonal(dim1=1, dim2=2).zero_()
    return sim


class _LogSumExpOthers(torch.autograd.Function):
    """z (G, M, D) -> (G, M): log sum_{j != i} exp(z_i . z_j), for every row i of every group.

    Written by hand because autograd's version of ``logsumexp(z @ z^T)`` keeps the (G, M, M) block and
    makes four more of its size, which for the temporal term of a long series (M = 2T = 4000) costs more
    than the encoder. Here the block is made once in the forward pass, freed, and made again in the
    backward pass, with every elementwise step in place.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        sim = z @ z.transpose(1, 2)                                    # (G, M, M)
        sim.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
        top = sim.amax(dim=-1)                                         # (G, M)
        lse = _softmax_weights_(sim, top).sum(-1).log_().add_(top)
        ctx.save_for_backward(z, lse)
        return lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        z, lse = ctx.saved_tensors
        weights = _softmax_weights_(z @ z.transpose(1, 2), lse)        # softmax over j != i, (G, M, M)
        weights.mul_(grad.unsqueeze(-1))
        return weights @ z + weights.transpose(1, 2) @ z               # d/dz of sum_ij w_ij z_i . z_j


def _contrast(z: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over anchors of -log softmax at the positive, over every other row of the group.

    z: (G, M, D) groups of M rows whose dot products compete; positive: (G, M) each row's dot product with
    its positive (a row is never compared with itself).
    """
    return (_LogSumExpOthers.apply(z) - positive).mean()


def instance_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """z1, z2 (B, T, D) -> scalar: at each step, each item's other view against the other items' views."""
    if z1.shape[0] == 1:
        return z1.new_zeros(())
    z = torch.cat([z1, z2], dim=0).transpose(0, 1)                    # (T, 2B, D): one group per step
    positive = (z1 * z2).sum(-1).transpose(0, 1)                      # (T, B): item i's two views
    return _contrast(z, torch.cat([positive, positive], dim=1))


def temporal_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """z1, z2 (B, T, D) -> scalar: within each item, a step's other view against the item's other steps."""
    if z1.shape[1] == 1:
        return z1.new_zeros(())
    z = torch.cat([z1, z2], dim=1)                                    # (B, 2T, D): one group per item
    positive = (z1 * z2).sum(-1)                                      # (B, T): step t's two views
    return _contrast(z, torch.cat([positive, positive], dim=1))


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
