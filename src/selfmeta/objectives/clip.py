"""The symmetric InfoNCE of CLIP (Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021, Figure 3): two groups of columns of the same record are a positive pair."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_loss(
    za: torch.Tensor,
    zb: torch.Tensor,
    logit_scale: torch.Tensor,
    valid: torch.Tensor | None = None,
    all_za: torch.Tensor | None = None,
    all_zb: torch.Tensor | None = None,
    all_valid: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Mean of the a->b and b->a cross-entropies over this process's valid pairs.

    Args:
        za, zb: (B, d) embeddings of the two sides of B records; row i of each is a positive pair.
        logit_scale: scalar, the inverse temperature (CLIP learns its log, clamped at log 100).
        valid: (B,) bool, records whose both sides have a value (the others are neither anchors nor
            negatives); default all.
        all_za, all_zb, all_valid: the same for every process's batch, concatenated in rank order
            (N = world size * B); default: this process's (one process).
        offset: where this process's rows start among the N (rank * B).

    With u = za / |za|, v = zb / |zb|, s = logit_scale: loss_a(i) = -log softmax_j(s u_i . v_j)[i] over the
    valid j, loss_b(i) likewise with v_i against every valid u_j; the loss is the mean of both over valid i.
    Zero (with a gradient) when no record is valid.
    """
    b = za.shape[0]
    valid = torch.ones(b, dtype=torch.bool, device=za.device) if valid is None else valid
    all_za = za if all_za is None else all_za
    all_zb = zb if all_zb is None else all_zb
    all_valid = valid if all_valid is None else all_valid
    u, v = F.normalize(za, dim=1), F.normalize(zb, dim=1)                  # (B, d)
    all_u, all_v = F.normalize(all_za, dim=1), F.normalize(all_zb, dim=1)  # (N, d)
    target = torch.arange(b, device=za.device) + offset                    # (B,) each anchor's positive
    blocked = ~all_valid.unsqueeze(0)                                      # (1, N) invalid keys
    logits_a = (logit_scale * u @ all_v.T).masked_fill(blocked, float("-inf"))   # (B, N)
    logits_b = (logit_scale * v @ all_u.T).masked_fill(blocked, float("-inf"))
    if not bool(valid.any()):
        return (za.sum() + zb.sum()) * 0.0
    loss_a = F.cross_entropy(logits_a[valid], target[valid])
    loss_b = F.cross_entropy(logits_b[valid], target[valid])
    return 0.5 * (loss_a + loss_b)
