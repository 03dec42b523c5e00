"""NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.2,
    all_z1: torch.Tensor | None = None,
    all_z2: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Mean NT-Xent over the 2B anchors of this process.

    Args:
        z1, z2: (B, d) projections of two views of the same B items; row i of z1 and z2 is a positive pair.
        temperature: the softmax temperature tau.
        all_z1, all_z2: (N, d) the projections of every process's batch, concatenated in rank order
            (N = world size * B); default: z1, z2 (one process). All 2N - 2 other items are negatives.
        offset: where this process's rows start inside all_z1 (rank * B).

    For anchor i with positive p(i): loss_i = -log( exp(s_ip / tau) / sum_{k != i} exp(s_ik / tau) ),
    s = cosine similarity.
    """
    all_z1 = z1 if all_z1 is None else all_z1
    all_z2 = z2 if all_z2 is None else all_z2
    b, n = z1.shape[0], all_z1.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]), dim=1)                 # (2B, d)
    candidates = F.normalize(torch.cat([all_z1, all_z2]), dim=1)      # (2N, d)
    logits = anchors @ candidates.T / temperature                     # (2B, 2N)
    local = torch.arange(b, device=z1.device) + offset
    self_index = torch.cat([local, local + n])                        # where each anchor sits among candidates
    positive = torch.cat([local + n, local])
    logits = logits.masked_fill(F.one_hot(self_index, 2 * n).bool(), float("-inf"))
    return F.cross_entropy(logits, positive)


def nt_xent_grouped(z1: torch.Tensor, z2: torch.Tensor, groups: torch.Tensor, temperature: float = 1.0,
                    normalize: bool = True) -> torch.Tensor:
    """NT-Xent over the 2B anchors where candidates of the anchor's own group are not negatives (DuoRec: two
    prefixes followed by the same item are not told apart).

    Args:
        z1, z2: (B, d) two views; row i of each is a positive pair.
        groups: (B,) int64 group of each pair (the next item).

    For anchor i with positive p(i): loss_i = -log( exp(s_ip / tau) / (exp(s_ip / tau) + sum_{k: g_k != g_i}
    exp(s_ik / tau)) ), s = cosine similarity over all 2B views (``normalize``), else the dot product (the
    similarity of CL4SRec's and DuoRec's code). With every group distinct and ``normalize`` it is ``nt_xent``.
    """
    b = z1.shape[0]
    z = torch.cat([z1, z2])                                                           # (2B, d)
    z = F.normalize(z, dim=1) if normalize else z
    logits = z @ z.T / temperature                                                    # (2B, 2B)
    g = torch.cat([groups, groups])
    index = torch.arange(2 * b, device=z.device)
    positive = torch.cat([index[b:], index[:b]])
    same = g.unsqueeze(0) == g.unsqueeze(1)                                           # own group, self included
    keep = ~same | F.one_hot(positive, 2 * b).bool()
    return F.cross_entropy(logits.masked_fill(~keep, float("-inf")), positive)
