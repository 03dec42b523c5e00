"""Metric-learning losses and their miners, used as self-supervised objectives.

Every item of a batch carries a label; two embeddings with the same label are a positive pair, two with
different labels a negative pair (in self-supervised use the label is the item, so the two augmented
views of an item are positives and every other item's views are negatives). Anchors are compared with a
set of candidates that holds them: with one process both are the batch; with several, the anchors are this
process's embeddings and the candidates everyone's, gathered in rank order (``offset`` says where the
anchors sit among them), so the negatives come from the global batch.

Pieces, each a pure function of tensors:

- :func:`squared_euclidean` / :func:`euclidean`: the (A, N) distance matrix;
- :func:`pair_masks`: which (anchor, candidate) pairs are positive or negative (an anchor is never its own
  positive);
- miners, which turn the distances into (anchor, positive, negative) index triplets:
  :func:`batch_hard_miner` (Hermans, Beyer & Leibe 2017) and :func:`semi_hard_miner` (Schroff et al. 2015);
- losses: :func:`triplet_loss` (FaceNet) and :func:`contrastive_loss` (Hadsell, Chopra & LeCun 2006).

The losses take the embeddings as given: L2-normalize them first where the margin is meant on the unit
sphere (the methods do).
"""

from __future__ import annotations

import torch

TRIPLET_MINING = ("batch_hard", "semi_hard")
CONTRASTIVE_MINING = ("batch_hard", "semi_hard", "all")


def squared_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(A, d), (N, d) -> (A, N) squared L2 distances ||x_a - y_n||^2, clamped at 0 against rounding."""
    sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1).unsqueeze(0) - 2 * x @ y.T  # (A, N)
    return sq.clamp_min(0)


def euclidean(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(A, d), (N, d) -> (A, N) L2 distances. Distances under sqrt(eps) get a zero gradient instead of the
    infinite one of sqrt at 0 (an anchor's distance to itself is in the matrix, though never used)."""
    sq = squared_euclidean(x, y)
    return torch.where(sq > eps, sq.clamp_min(eps).sqrt(), torch.zeros_like(sq))


def pair_masks(
    labels: torch.Tensor, candidate_labels: torch.Tensor, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative pairs between A anchors and N candidates.

    Args:
        labels: (A,) the anchors' labels.
        candidate_labels: (N,) the candidates' labels; rows offset .. offset + A are the anchors themselves.
        offset: where the anchors start among the candidates.

    Returns:
        positive (A, N) bool: same label, not the anchor itself; negative (A, N) bool: different label.
    """
    a, n = labels.shape[0], candidate_labels.shape[0]
    same = labels.unsqueeze(1) == candidate_labels.unsqueeze(0)                  # (A, N)
    self_index = torch.arange(a, device=labels.device) + offset                  # (A,)
    is_self = torch.zeros(a, n, dtype=torch.bool, device=labels.device)
    is_self[torch.arange(a, device=labels.device), self_index] = True
    return same & ~is_self, ~same


def batch_hard_miner(
    dist: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-hard mining (Hermans et al. 2017): per anchor, its farthest positive and closest negative.

    Args:
        dist: (A, N) anchor-candidate distances; positive, negative: (A, N) bool masks (see pair_masks).

    Returns:
        (anchor, pos, neg): (K,) int64 indices, one triplet per anchor that has both a positive and a
        negative (K <= A); ``anchor`` indexes rows of ``dist``, ``pos`` and ``neg`` its columns.
    """
    inf = torch.finfo(dist.dtype).max
    hardest_pos = dist.detach().masked_fill(~positive, -inf).argmax(1)          # (A,)
    hardest_neg = dist.detach().masked_fill(~negative, inf).argmin(1)           # (A,)
    valid = positive.any(1) & negative.any(1)                                   # (A,)
    anchor = valid.nonzero().squeeze(1)                                         # (K,)
    return anchor, hardest_pos[anchor], hardest_neg[anchor]


def semi_hard_miner(
    dist: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Semi-hard mining (Schroff et al. 2015, FaceNet, sec. 3.2): every anchor-positive pair (a, p) with the
    closest negative n that is farther than the positive but within the margin,

        d_ap < d_an < d_ap + margin,

    or, where no negative lies in that window, the closest negative of all (the hardest).

    Args:
        dist: (A, N) anchor-candidate distances; positive, negative: (A, N) bool masks (see pair_masks).
        margin: the width of the semi-hard window.

    Returns:
        (anchor, pos, neg): (K,) int64 indices, one triplet per positive pair whose anchor has a negative.
    """
    inf = torch.finfo(dist.dtype).max
    d = dist.detach()
    has_negative = negative.any(1)                                             # (A,)
    anchor, pos = (positive & has_negative.unsqueeze(1)).nonzero(as_tuple=True)  # (K,), (K,)
    rows = d[anchor]                                                           # (K, N) distances from a
    d_ap = d[anchor, pos].unsqueeze(1)                                         # (K, 1)
    neg_rows = negative[anchor]                                                # (K, N)
    window = neg_rows & (rows > d_ap) & (rows < d_ap + margin)                 # (K, N) semi-hard negatives
    semi_hard = rows.masked_fill(~window, inf).argmin(1)                       # (K,)
    hardest = rows.masked_fill(~neg_rows, inf).argmin(1)                       # (K,)
    neg = torch.where(window.any(1), semi_hard, hardest)
    return anchor, pos, neg


def _mine(
    dist: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, mining: str, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if mining == "batch_hard":
        return batch_hard_miner(dist, positive, negative)
    if mining == "semi_hard":
        return semi_hard_miner(dist, positive, negative, margin)
    raise ValueError(f"unknown mining {mining!r}; valid: {', '.join(CONTRASTIVE_MINING)}")


def _candidates(
    z: torch.Tensor, labels: torch.Tensor, all_z: torch.Tensor | None, all_labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if (all_z is None) != (all_labels is None):
        raise ValueError("give both all_z and all_labels, or neither")
    return (z, labels) if all_z is None else (all_z, all_labels)


def triplet_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.2,
    mining: str = "batch_hard",
    all_z: torch.Tensor | None = None,
    all_labels: torch.Tensor | None = None,
    offset: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """FaceNet's triplet loss (Schroff, Kalenichenko & Philbin, CVPR 2015, eq. 1) on mined triplets:

        loss = mean over mined (a, p, n) of max(0, ||z_a - z_p||^2 - ||z_a - z_n||^2 + margin)

    with squared L2 distances, as in the paper (on unit vectors they lie in [0, 4]).

    Args:
        z: (A, d) anchor embeddings; labels: (A,) their labels.
        margin: alpha, the gap the negative must keep beyond the positive (0.2 in FaceNet).
        mining: "batch_hard" (one triplet per anchor) or "semi_hard" (one per positive pair).
        all_z, all_labels: (N, d), (N,) the candidates, holding the anchors at rows offset .. offset + A
            (default: z, labels).
        offset: where the anchors start among the candidates.

    Returns:
        (loss, stats): the scalar loss (0, still differentiable, when no triplet exists) and detached
        statistics: ``active`` (fraction of triplets with a positive loss), ``pos_dist``, ``neg_dist``.
    """
    if mining not in TRIPLET_MINING:
        raise ValueError(f"unknown mining {mining!r} for the triplet loss; valid: {', '.join(TRIPLET_MINING)}")
    all_z, all_labels = _candidates(z, labels, all_z, all_labels)
    dist = squared_euclidean(z, all_z)                                          # (A, N)
    positive, negative = pair_masks(labels, all_labels, offset)
    anchor, pos, neg = _mine(dist, positive, negative, mining, margin)          # (K,) each
    d_ap, d_an = dist[anchor, pos], dist[anchor, neg]                           # (K,)
    per_triplet = (d_ap - d_an + margin).clamp_min(0)                           # (K,)
    return _reduce(per_triplet, dist, d_ap, d_an)


def contrastive_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 1.0,
    mining: str = "batch_hard",
    all_z: torch.Tensor | None = None,
    all_labels: torch.Tensor | None = None,
    offset: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The contrastive (margin) loss of Hadsell, Chopra & LeCun (CVPR 2006, eq. 4), with D the L2 distance:

        positive pair: 1/2 D^2            (pulled to distance 0)
        negative pair: 1/2 max(0, m - D)^2  (pushed beyond the margin m)

    loss = mean of the positive-pair terms + mean of the negative-pair terms, over the pairs that the
    mining keeps (so positives and negatives weigh the same however many negatives there are):
    "all": every positive and every negative pair; "batch_hard": each anchor's farthest positive and
    closest negative; "semi_hard": each positive pair and its semi-hard negative (see semi_hard_miner,
    with m as the window).

    Args and returns: as :func:`triplet_loss`; ``active`` is the fraction of mined negative pairs inside the
    margin.
    """
    if mining not in CONTRASTIVE_MINING:
        raise ValueError(f"unknown mining {mining!r} for the contrastive loss; valid: {', '.join(CONTRASTIVE_MINING)}")
    all_z, all_labels = _candidates(z, labels, all_z, all_labels)
    dist = euclidean(z, all_z)                                                  # (A, N)
    positive, negative = pair_masks(labels, all_labels, offset)
    if mining == "all":
        d_ap, d_an = dist[positive], dist[negative]                             # (P,), (Q,)
    else:
        anchor, pos, neg = _mine(dist, positive, negative, mining, margin)
        d_ap, d_an = dist[anchor, pos], dist[anchor, neg]                       # (K,)
    pos_term = 0.5 * d_ap.pow(2)                                                # (P,)
    neg_term = 0.5 * (margin - d_an).clamp_min(0).pow(2)                        # (Q,)
    zero = dist.sum() * 0  # an empty term adds 0 and keeps the graph (and DDP's gradient hooks)
    loss = zero + _mean(pos_term, zero) + _mean(neg_term, zero)
    stats = {"active": _mean((d_an < margin).to(dist.dtype), zero), "pos_dist": _mean(d_ap, zero),
             "neg_dist": _mean(d_an, zero)}
    return loss, {k: v.detach() for k, v in stats.items()}


def _mean(t: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return t.mean() if t.numel() else zero


def _reduce(
    per_triplet: torch.Tensor, dist: torch.Tensor, d_ap: torch.Tensor, d_an: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean over the mined triplets; a zero that keeps the graph (and DDP's gradient hooks) when none exist."""
    if per_triplet.numel() == 0:
        zero = dist.sum() * 0
        return zero, {"active": zero.detach(), "pos_dist": zero.detach(), "neg_dist": zero.detach()}
    stats = {"active": (per_triplet > 0).float().mean(), "pos_dist": d_ap.mean(), "neg_dist": d_an.mean()}
    return per_triplet.mean(), {k: v.detach() for k, v in stats.items()}
