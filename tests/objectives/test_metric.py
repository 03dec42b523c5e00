"""Metric losses and miners against naive loops over explicit pairs and triplets, in Python floats."""

from __future__ import annotations

import math

import pytest
import torch

from selfmeta.objectives.metric import (
    batch_hard_miner,
    contrastive_loss,
    euclidean,
    pair_masks,
    semi_hard_miner,
    squared_euclidean,
    triplet_loss,
)


# ----------------------------------------------------------------------------------------------- references


def naive_sq(u: list[float], v: list[float]) -> float:
    return sum((a - b) ** 2 for a, b in zip(u, v))


def naive_pairs(labels: list[int], candidate_labels: list[int], offset: int) -> tuple[list[list[int]], list[list[int]]]:
    """Per anchor i: the candidate indices that are its positives (same label, not itself) and negatives."""
    positives, negatives = [], []
    for i, label in enumerate(labels):
        positives.append([j for j, c in enumerate(candidate_labels) if c == label and j != i + offset])
        negatives.append([j for j, c in enumerate(candidate_labels) if c != label])
    return positives, negatives


def naive_batch_hard(dist: list[list[float]], positives, negatives) -> list[tuple[int, int, int]]:
    triplets = []
    for a in range(len(dist)):
        if not positives[a] or not negatives[a]:
            continue
        p = max(positives[a], key=lambda j: dist[a][j])
        n = min(negatives[a], key=lambda j: dist[a][j])
        triplets.append((a, p, n))
    return triplets


def naive_semi_hard(dist, positives, negatives, margin: float, counts: dict | None = None) -> list[tuple]:
    """FaceNet's rule, one anchor-positive pair at a time; ``counts`` tallies which branch chose the negative."""
    triplets = []
    for a in range(len(dist)):
        if not negatives[a]:
            continue
        for p in positives[a]:
            d_ap = dist[a][p]
            window = [n for n in negatives[a] if d_ap < dist[a][n] < d_ap + margin]
            if window:
                n = min(window, key=lambda j: dist[a][j])
                branch = "semi_hard"
            else:
                n = min(negatives[a], key=lambda j: dist[a][j])
                branch = "hardest"
            if counts is not None:
                counts[branch] = counts.get(branch, 0) + 1
            triplets.append((a, p, n))
    return triplets


def naive_mine(dist, positives, negatives, mining, margin):
    if mining == "batch_hard":
        return naive_batch_hard(dist, positives, negatives)
    return naive_semi_hard(dist, positives, negatives, margin)


def naive_triplet(z, labels, margin, mining, all_z=None, all_labels=None, offset=0) -> float:
    """FaceNet eq. 1 on squared distances, averaged over the mined triplets."""
    z, labels = z.tolist(), labels.tolist()
    all_z = z if all_z is None else all_z.tolist()
    all_labels = labels if all_labels is None else all_labels.tolist()
    dist = [[naive_sq(u, v) for v in all_z] for u in z]
    positives, negatives = naive_pairs(labels, all_labels, offset)
    triplets = naive_mine(dist, positives, negatives, mining, margin)
    return sum(max(0.0, dist[a][p] - dist[a][n] + margin) for a, p, n in triplets) / len(triplets)


def naive_contrastive(z, labels, margin, mining, all_z=None, all_labels=None, offset=0) -> float:
    """Hadsell et al. eq. 4: mean of 1/2 D^2 over positive pairs + mean of 1/2 max(0, m - D)^2 over negatives."""
    z, labels = z.tolist(), labels.tolist()
    all_z = z if all_z is None else all_z.tolist()
    all_labels = labels if all_labels is None else all_labels.tolist()
    dist = [[math.sqrt(naive_sq(u, v)) for v in all_z] for u in z]
    positives, negatives = naive_pairs(labels, all_labels, offset)
    if mining == "all":
        pos = [(a, p) for a in range(len(z)) for p in positives[a]]
        neg = [(a, n) for a in range(len(z)) for n in negatives[a]]
    else:
        triplets = naive_mine(dist, positives, negatives, mining, margin)
        pos = [(a, p) for a, p, _ in triplets]
        neg = [(a, n) for a, _, n in triplets]
    pos_term = sum(0.5 * dist[a][p] ** 2 for a, p in pos) / len(pos)
    neg_term = sum(0.5 * max(0.0, margin - dist[a][n]) ** 2 for a, n in neg) / len(neg)
    return pos_term + neg_term


def two_views(b: int, d: int, seed: int, dtype=torch.float64, noise: float = 0.5):
    """Unit projections of two views of b items (rows i and b + i are the same item), labelled by item."""
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, d, generator=g, dtype=dtype)
    z2 = z1 + noise * torch.randn(b, d, generator=g, dtype=dtype)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    return z, torch.arange(b).repeat(2)


# -------------------------------------------------------------------------------------- distances and pairs


def test_distances_match_naive():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    expected = [[naive_sq(u, v) for v in y.tolist()] for u in x.tolist()]
    assert torch.allclose(squared_euclidean(x, y), torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(euclidean(x, y), torch.tensor(expected, dtype=torch.float64).sqrt(), atol=1e-12)


def test_distance_to_itself_has_a_finite_zero_gradient():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    d = euclidean(x, x)
    assert torch.all(d.diagonal() == 0)
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("offset", [0, 2, 5])
def test_pair_masks_match_naive(offset):
    g = torch.Generator().manual_seed(offset)
    candidate_labels = torch.randint(0, 3, (9,), generator=g)
    labels = candidate_labels[offset : offset + 4]
    positive, negative = pair_masks(labels, candidate_labels, offset)
    positives, negatives = naive_pairs(labels.tolist(), candidate_labels.tolist(), offset)
    assert [row.nonzero().flatten().tolist() for row in positive] == positives
    assert [row.nonzero().flatten().tolist() for row in negative] == negatives


# ----------------------------------------------------------------------------------------------------- miners


def random_problem(seed: int, anchors: int = 6, candidates: int = 12, classes: int = 3, offset: int = 3):
    g = torch.Generator().manual_seed(seed)
    candidate_labels = torch.randint(0, classes, (candidates,), generator=g)
    labels = candidate_labels[offset : offset + anchors]
    dist = torch.rand(anchors, candidates, generator=g, dtype=torch.float64) * 2
    positive, negative = pair_masks(labels, candidate_labels, offset)
    positives, negatives = naive_pairs(labels.tolist(), candidate_labels.tolist(), offset)
    return dist, positive, negative, positives, negatives


@pytest.mark.parametrize("seed", range(5))
def test_batch_hard_miner_matches_naive(seed):
    dist, positive, negative, positives, negatives = random_problem(seed)
    anchor, pos, neg = batch_hard_miner(dist, positive, negative)
    expected = naive_batch_hard(dist.tolist(), positives, negatives)
    assert list(zip(anchor.tolist(), pos.tolist(), neg.tolist())) == expected


def test_batch_hard_miner_skips_anchors_without_positives_or_negatives():
    labels = torch.tensor([0, 1, 1, 2])                 # item 0 and 3 have no positive
    dist = torch.rand(4, 4, dtype=torch.float64)
    positive, negative = pair_masks(labels, labels)
    anchor, pos, neg = batch_hard_miner(dist, positive, negative)
    assert anchor.tolist() == [1, 2] and pos.tolist() == [2, 1]
    only_one_class = pair_masks(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    assert batch_hard_miner(dist[:3, :3], *only_one_class)[0].numel() == 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("margin", [0.2, 0.6])
def test_semi_hard_miner_matches_naive(seed, margin):
    dist, positive, negative, positives, negatives = random_problem(seed, anchors=8, candidates=16)
    anchor, pos, neg = semi_hard_miner(dist, positive, negative, margin)
    expected = naive_semi_hard(dist.tolist(), positives, negatives, margin)
    assert list(zip(anchor.tolist(), pos.tolist(), neg.tolist())) == expected


def test_semi_hard_miner_takes_both_branches():
    """Over these problems the rule picks semi-hard negatives and falls back to the hardest one; the miner
    agrees with the naive loop on all of them."""
    counts: dict[str, int] = {}
    for seed in range(10):
        dist, positive, negative, positives, negatives = random_problem(seed, anchors=8, candidates=16)
        expected = naive_semi_hard(dist.tolist(), positives, negatives, 0.3, counts)
        anchor, pos, neg = semi_hard_miner(dist, positive, negative, 0.3)
        assert list(zip(anchor.tolist(), pos.tolist(), neg.tolist())) == expected
    assert counts.get("semi_hard", 0) > 0 and counts.get("hardest", 0) > 0, counts


def test_semi_hard_picks_the_closest_negative_in_the_window():
    # One anchor (0), one positive (1) at distance 0.5; negatives at 0.3 (hard), 0.6 and 0.65 (semi-hard), 0.9.
    labels = torch.tensor([0, 0, 1, 2, 3, 4])
    dist = torch.tensor([[0.0, 0.5, 0.3, 0.65, 0.6, 0.9]], dtype=torch.float64)
    positive, negative = pair_masks(labels[:1], labels)
    assert semi_hard_miner(dist, positive, negative, 0.2)[2].tolist() == [4]
    # A margin too small for any window: fall back to the hardest negative (0.3).
    assert semi_hard_miner(dist, positive, negative, 0.05)[2].tolist() == [2]


# ----------------------------------------------------------------------------------------------------- losses


CASES = [(2, 3, 0), (4, 5, 1), (8, 4, 2), (16, 8, 3)]


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
@pytest.mark.parametrize("b,d,seed", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triplet_loss_matches_naive(mining, b, d, seed, dtype):
    z, labels = two_views(b, d, seed, dtype)
    loss, stats = triplet_loss(z, labels, 0.2, mining)
    assert loss.dtype == dtype and loss.shape == ()
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert loss.item() == pytest.approx(naive_triplet(z, labels, 0.2, mining), rel=tol, abs=tol)
    assert 0 <= stats["active"].item() <= 1


@pytest.mark.parametrize("mining", ["all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("b,d,seed", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contrastive_loss_matches_naive(mining, b, d, seed, dtype):
    z, labels = two_views(b, d, seed, dtype)
    loss, _ = contrastive_loss(z, labels, 1.0, mining)
    assert loss.dtype == dtype and loss.shape == ()
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert loss.item() == pytest.approx(naive_contrastive(z, labels, 1.0, mining), rel=tol, abs=tol)


@pytest.mark.parametrize("margin", [0.1, 0.5, 1.5])
@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_losses_match_naive_with_several_positives_per_anchor(margin, mining):
    """General labels: classes of several items, anchors a slice of the candidates."""
    g = torch.Generator().manual_seed(7)
    all_z = torch.randn(14, 4, generator=g, dtype=torch.float64)
    all_labels = torch.randint(0, 4, (14,), generator=g)
    z, labels = all_z[5:11], all_labels[5:11]
    for loss_fn, naive in [(triplet_loss, naive_triplet), (contrastive_loss, naive_contrastive)]:
        loss, _ = loss_fn(z, labels, margin, mining, all_z=all_z, all_labels=all_labels, offset=5)
        expected = naive(z, labels, margin, mining, all_z, all_labels, offset=5)
        assert loss.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_contrastive_all_with_several_positives_matches_naive():
    g = torch.Generator().manual_seed(8)
    all_z = torch.randn(12, 3, generator=g, dtype=torch.float64)
    all_labels = torch.randint(0, 3, (12,), generator=g)
    loss, _ = contrastive_loss(all_z[:6], all_labels[:6], 2.0, "all", all_z=all_z, all_labels=all_labels)
    assert loss.item() == pytest.approx(naive_contrastive(all_z[:6], all_labels[:6], 2.0, "all", all_z, all_labels))


def test_identical_views_give_finite_gradients_and_the_right_floor():
    z = torch.nn.functional.normalize(torch.randn(6, 5, dtype=torch.float64), dim=1)
    z = torch.cat([z, z]).requires_grad_()
    labels = torch.arange(6).repeat(2)
    for loss_fn in (triplet_loss, contrastive_loss):
        for mining in ("batch_hard", "semi_hard"):
            loss, stats = loss_fn(z, labels, 0.2, mining)
            (grad,) = torch.autograd.grad(loss, z)
            assert torch.isfinite(grad).all() and stats["pos_dist"].item() == pytest.approx(0, abs=1e-12)
    # Orthogonal items and identical views: every negative is beyond any margin, the loss is 0.
    eye = torch.eye(6, dtype=torch.float64)
    assert triplet_loss(torch.cat([eye, eye]), labels, 0.2)[0].item() == pytest.approx(0, abs=1e-12)
    assert contrastive_loss(torch.cat([eye, eye]), labels, 1.0, "all")[0].item() == pytest.approx(0, abs=1e-12)


def test_no_triplet_gives_a_differentiable_zero():
    z = torch.randn(3, 4, requires_grad=True)
    loss, _ = triplet_loss(z, torch.tensor([0, 1, 2]))         # nobody has a positive
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_unknown_mining_is_refused():
    z, labels = two_views(2, 3, 0)
    with pytest.raises(ValueError, match="valid: batch_hard, semi_hard"):
        triplet_loss(z, labels, mining="all")
    with pytest.raises(ValueError, match="valid: batch_hard, semi_hard, all"):
        contrastive_loss(z, labels, mining="hardest")


# ----------------------------------------------------------------------------------------------- distributed


def rank_layout(z1: torch.Tensor, z2: torch.Tensor, world: int):
    """What the methods gather: every rank's [view 1; view 2] block, in rank order, labelled by global item."""
    b = len(z1) // world
    blocks = [torch.cat([z1[r * b : (r + 1) * b], z2[r * b : (r + 1) * b]]) for r in range(world)]
    labels = torch.arange(world * b).view(world, 1, b).expand(world, 2, b).reshape(-1)
    return blocks, torch.cat(blocks), labels


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize(
    "loss_fn,mining", [(triplet_loss, "batch_hard"), (triplet_loss, "semi_hard"), (contrastive_loss, "all"),
                       (contrastive_loss, "batch_hard"), (contrastive_loss, "semi_hard")]
)
def test_distributed_form_equals_full_batch(world, loss_fn, mining):
    b, d = 3, 5
    g = torch.Generator().manual_seed(world)
    z1 = torch.randn(world * b, d, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = (z1 + 0.5 * torch.randn(world * b, d, generator=g, dtype=torch.float64)).detach().requires_grad_()

    blocks, all_z, all_labels = rank_layout(z1, z2, world)
    full, _ = loss_fn(all_z, all_labels, 0.5, mining)
    full_grads = torch.autograd.grad(full, [z1, z2])

    # Each simulated rank's anchors are its block; the candidates are the gathered blocks (gradients flow
    # through the gather); DDP averages the ranks' gradients.
    per_rank = [
        loss_fn(blocks[r], all_labels[r * 2 * b : (r + 1) * 2 * b], 0.5, mining, all_z=all_z, all_labels=all_labels,
                offset=r * 2 * b)[0]
        for r in range(world)
    ]
    mean = torch.stack(per_rank).mean()
    assert mean.item() == pytest.approx(full.item(), rel=1e-12)
    for got, expected in zip(torch.autograd.grad(mean, [z1, z2]), full_grads):
        assert torch.allclose(got, expected, atol=1e-12)
    naive = naive_triplet if loss_fn is triplet_loss else naive_contrastive
    for r in range(world):
        expected = naive(blocks[r].detach(), all_labels[r * 2 * b : (r + 1) * 2 * b], 0.5, mining, all_z.detach(),
                         all_labels, offset=r * 2 * b)
        assert per_rank[r].item() == pytest.approx(expected, rel=1e-10)
