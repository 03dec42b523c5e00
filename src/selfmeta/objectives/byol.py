"""BYOL's regression loss: normalized predictions against normalized target projections (Grill et al. 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-row squared distance of the L2-normalized vectors: (B, d), (B, d) -> (B,).

    |p/|p| - z/|z||^2 = 2 - 2 cos(p, z), in [0, 4] (Grill et al. 2020, eq. 2).
    """
    return 2 - 2 * F.cosine_similarity(p, z, dim=1)


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """BYOL's symmetrized loss L + L~ (Grill et al. 2020, eq. 2 and the line below it), averaged over the batch.

    Args:
        p1, p2: (B, d) online predictions q(g(f(v))) of views 1 and 2.
        z1, z2: (B, d) target projections g'(f'(v)) of views 1 and 2 (give them without gradient).

    loss = mean_i [ (2 - 2 cos(p1_i, z2_i)) + (2 - 2 cos(p2_i, z1_i)) ], in [0, 8]: each view's
    prediction regresses the target's projection of the other view.
    """
    return (normalized_mse(p1, z2) + normalized_mse(p2, z1)).mean()
