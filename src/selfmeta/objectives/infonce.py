"""InfoNCE against a queue of negative keys, the contrastive loss of MoCo (He et al. 2020, eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Mean InfoNCE of the B queries: each must pick its own key out of [its key, the K queued keys].

    Args:
        q: (B, d) queries; row i's positive is row i of ``k``.
        k: (B, d) keys (give them without gradient: MoCo's key encoder is not trained by back-propagation).
        queue: (K, d) negative keys, shared by every query.
        temperature: the softmax temperature tau (MoCo v2: 0.2).

    With u = q / |q|, v = k / |k|, n_j = queue_j / |queue_j| (cosine similarities):
    loss_i = -log( exp(u_i . v_i / tau) / (exp(u_i . v_i / tau) + sum_{j=1..K} exp(u_i . n_j / tau)) ).
    """
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    queue = F.normalize(queue, dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)                       # (B, 1)
    negative = q @ queue.T                                            # (B, K)
    logits = torch.cat([positive, negative], dim=1) / temperature     # (B, 1 + K); the positive is class 0
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)
