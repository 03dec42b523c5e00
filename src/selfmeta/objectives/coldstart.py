"""Adapting a user's state to their first few interactions (each user a task, as MeLU, Lee et al. KDD 2019).

A user's state ``u`` scores every catalogue item (``scores(u)`` -> (B, V') logits). The support loss is the
mean cross-entropy of the user's own items under the softmax over all items: the items the user took should
score high. Adaptation takes gradient steps on ``u`` alone: plain fine-tuning with one learning rate, or the
meta-learned per-dimension rates of Meta-SGD (Li et al. 2017), with ``create_graph`` so that meta-training
differentiates through the steps (MAML).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Scores = Callable[[torch.Tensor], torch.Tensor]


def items_loss(scores: Scores, u: torch.Tensor, items: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,) mean cross-entropy of each row's valid ``items`` (B, k) catalogue columns under the softmax of
    ``scores(u)`` (B, V'); 0 for a row without valid items."""
    log_p = F.log_softmax(scores(u).float(), dim=-1)                                  # (B, V')
    picked = log_p.gather(1, items.clamp_min(0)) * valid                              # (B, k)
    return -picked.sum(1) / valid.sum(1).clamp_min(1)


def adapt_states(scores: Scores, u: torch.Tensor, support: torch.Tensor, valid: torch.Tensor, steps: int,
                 lr: torch.Tensor | float, create_graph: bool = False) -> torch.Tensor:
    """``steps`` gradient steps on the states (B, d), each ``u <- u - lr * grad`` of the support loss (summed over
    rows, so each row moves by its own gradient); ``lr`` a float or (d,) rates."""
    for _ in range(steps):
        if not u.requires_grad:
            u = u.detach().requires_grad_(True)
        loss = items_loss(scores, u, support, valid).sum()
        (grad,) = torch.autograd.grad(loss, u, create_graph=create_graph)
        u = u - lr * grad
    return u
