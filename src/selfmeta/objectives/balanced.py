"""Cross-entropy on pseudo-labels with class weights inversely proportional to cluster size (DeepCluster)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, cluster_sizes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy where every pseudo-class weighs the same, whatever its size.

    DeepCluster (Caron et al. 2018, section 3.3, "Avoiding trivial solutions") samples images uniformly
    over the pseudo-classes so that a huge cluster does not dominate the loss. The batched equivalent is a
    weighted loss with w_c = 1 / n_c:

        loss = sum_i w_{y_i} * CE(logits_i, y_i) / sum_i w_{y_i}

    With w_c = N / (k n_c) the plain mean (1/N) sum_i w_{y_i} CE_i over the data set equals the expected
    loss under uniform sampling over classes, (1/k) sum_c mean_{i in c} CE_i; normalizing by the batch's
    total weight (as ``F.cross_entropy(weight=...)`` does) estimates the same quantity with bounded
    per-batch weights.

    Args:
        logits: (B, k) class scores.
        labels: (B,) int64 pseudo-labels in [0, k).
        cluster_sizes: (k,) number of items of each pseudo-class in the whole data set (empty classes,
            which no label points to, get weight 0).
    """
    sizes = cluster_sizes.to(logits.dtype)
    weight = torch.where(sizes > 0, 1.0 / sizes.clamp_min(1), torch.zeros_like(sizes))   # (k,)
    return F.cross_entropy(logits, labels, weight=weight)
