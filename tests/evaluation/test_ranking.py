"""Next-item ranking maths (ranks with ties, HR/NDCG, sampled negatives, the protocol on a hand-made case), the
grouped NT-Xent of DuoRec and the cold-start protocol's metrics, against hand computations and slow loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfmeta.data.dataset import Dataset
from selfmeta.evaluation.coldstart import top_k_metrics
from selfmeta.evaluation.ranking import (
    evaluate_ranking,
    history_mask,
    hit_ndcg,
    sampled_candidates,
    target_ranks,
)
from selfmeta.objectives.ntxent import nt_xent, nt_xent_grouped

INF = float("inf")


def test_target_ranks_by_hand_ties_count_against_the_target():
    # ids 0-2 special (excluded), items 3..7
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.5, 0.9, 0.5, 0.1, 0.7],
                           [0.0, 0.0, 0.0, 0.5, 0.9, 0.5, 0.1, 0.7],
                           [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 2.0],     # constant: every candidate ties
                           [0.0, 0.0, 0.0, 0.3, 0.2, 0.1, 0.0, -1.0]])
    targets = torch.tensor([5, 5, 6, 3])
    exclude = torch.zeros(4, 8, dtype=torch.bool)
    exclude[:, :3] = True
    exclude[1, 4] = True                                                   # row 1: item 4 is in the history
    before = exclude.clone()
    ranks = target_ranks(scores, targets, exclude)
    # row 0: 3 (tie, 0.5) 4 (0.9) 7 (0.7) against the target; row 1: item 4 left out; row 2: the 4 other
    # candidates; row 3: the best item
    assert ranks.tolist() == [3, 2, 4, 0]
    assert ranks.dtype == torch.int64
    assert torch.equal(exclude, before)                                    # the caller's mask is not changed
    # the target is never left out: excluding it changes nothing
    exclude[torch.arange(4), targets] = True
    assert target_ranks(scores, targets, exclude).tolist() == [3, 2, 4, 0]
    # -inf scores (special ids) never outrank anything but still tie with an -inf target
    scores[:, :3] = -INF
    assert target_ranks(scores, targets, torch.zeros(4, 8, dtype=torch.bool)).tolist() == [3, 3, 4, 0]


def test_hit_ndcg_by_hand():
    ranks = torch.tensor([0, 1, 9, 10, 50])
    result = hit_ndcg(ranks, k=10)
    assert result["hr@10"] == pytest.approx(3 / 5)
    assert result["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 5)
    assert hit_ndcg(torch.tensor([0]), k=1) == {"hr@1": 1.0, "ndcg@1": 1.0}
    assert hit_ndcg(torch.tensor([1]), k=5)["ndcg@5"] == pytest.approx(1 / math.log2(3))
    assert hit_ndcg(torch.tensor([5]), k=5) == {"hr@5": 0.0, "ndcg@5": 0.0}


def test_sampled_candidates():
    g = torch.Generator().manual_seed(0)
    n, v = 20, 30
    exclude = torch.rand(n, v, generator=g) < 0.4
    exclude[:, :3] = True
    exclude[0, 3:] = True                                                  # row 0: only 2 items left (and the target)
    exclude[0, [10, 11, 12]] = False
    targets = torch.randint(3, v, (n,), generator=g)
    targets[0] = 10
    for negatives in (5, 1, 100):
        chosen = sampled_candidates(exclude.clone(), targets, negatives, torch.Generator().manual_seed(7))
        allowed = ~exclude
        allowed[torch.arange(n), targets] = False
        assert chosen.dtype == torch.bool and chosen.shape == (n, v)
        assert not bool((chosen & ~allowed).any())                        # never excluded, never the target
        assert chosen.sum(1).tolist() == torch.minimum(allowed.sum(1), torch.tensor(negatives)).tolist()
        again = sampled_candidates(exclude.clone(), targets, negatives, torch.Generator().manual_seed(7))
        assert torch.equal(chosen, again)                                  # seeded: the same draw
    assert sampled_candidates(exclude, targets, 5, torch.Generator().manual_seed(0))[0].nonzero().flatten().tolist() \
        == [11, 12]
    other = sampled_candidates(exclude, targets, 5, torch.Generator().manual_seed(1))
    assert not torch.equal(other, sampled_candidates(exclude, targets, 5, torch.Generator().manual_seed(2)))
    # uniform among the allowed: every allowed item of a row is drawn about equally often
    counts = torch.zeros(v)
    row_exclude = torch.zeros(1, v, dtype=torch.bool)
    row_exclude[0, :3] = True
    gen = torch.Generator().manual_seed(3)
    for _ in range(400):
        counts += sampled_candidates(row_exclude, torch.tensor([3]), 13, gen)[0].float()
    drawn = counts[4:]
    assert counts[:4].sum() == 0 and drawn.min() > 400 * 0.5 * 0.6 and drawn.max() < 400 * 0.5 * 1.4


def test_history_mask():
    mask = history_mask(torch.tensor([[4, 5, 0], [7, 0, 0]]), 8)
    assert mask.tolist() == [[True, True, True, False, True, True, False, False],
                             [True, True, True, False, False, False, False, True]]


def test_evaluate_ranking_by_hand():
    x = torch.tensor([[3, 4, 5, 0],      # history 3 4, target 5
                      [6, 7, 0, 0],      # history 6, target 7
                      [3, 1, 0, 0],      # history 3, target unseen ([UNK])
                      [5, 0, 0, 0]],     # no history: left out
                     dtype=torch.int32)
    data = Dataset(x, None, [], "interactions", "hand")
    scores = torch.tensor([[-INF, -INF, -INF, 9.0, 9.0, 5.0, 1.0, 2.0],     # best among 5 6 7: rank 0
                           [-INF, -INF, -INF, 5.0, 4.0, 3.0, 9.0, 2.0],     # 3 4 5 above the target: rank 3
                           [-INF, -INF, -INF, 1.0, 2.0, 3.0, 4.0, 5.0],     # -inf target: rank 4 (4 5 6 7)
                           [-INF, -INF, -INF, 1.0, 2.0, 3.0, 4.0, 5.0]])
    result = evaluate_ranking(scores, data, k=3, negatives=2, seed=0)
    assert result["users"] == 3 and result["unseen_targets"] == 1
    assert result["hr@3"] == pytest.approx(1 / 3) and result["ndcg@3"] == pytest.approx(1 / 3)
    # against 2 sampled negatives: row 0 rank 0, row 1 rank 2 (both drawn items are above), row 2 rank 2
    assert result["sampled_2"] == pytest.approx({"hr@3": 1.0, "ndcg@3": (1 + 0.5 + 0.5) / 3})
    known = [0, 1, 3]                                                      # the rows of catalogue targets
    full = evaluate_ranking(scores[known], Dataset(x[known], None, [], "interactions", "hand"), k=10, negatives=100)
    assert full["users"] == 2 and full["unseen_targets"] == 0
    assert full["hr@10"] == 1.0 and full["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / 2)
    assert full["sampled_100"] == pytest.approx({"hr@10": 1.0, "ndcg@10": full["ndcg@10"]})  # < 100 left: all


def nt_xent_grouped_loop(z1, z2, groups, temperature, normalize=True):
    """Slow reference: loss_i = -log(exp(s_ip/t) / (exp(s_ip/t) + sum over other groups exp(s_ik/t))), s the
    cosine similarity (``normalize``) or the dot product."""
    z = torch.cat([z1, z2])
    z = F.normalize(z, dim=1) if normalize else z
    g = torch.cat([groups, groups]).tolist()
    b = len(z1)
    losses = []
    for i in range(2 * b):
        p = (i + b) % (2 * b)
        positive = torch.exp(z[i] @ z[p] / temperature)
        negatives = sum(torch.exp(z[i] @ z[k] / temperature) for k in range(2 * b) if g[k] != g[i])
        losses.append(-torch.log(positive / (positive + negatives)))
    return torch.stack(losses).mean()


def test_nt_xent_grouped():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    distinct = torch.tensor([10, 4, 7, 3, 99, 5])
    for temperature in (1.0, 0.3):
        assert torch.allclose(nt_xent_grouped(z1, z2, distinct, temperature), nt_xent(z1, z2, temperature))
        assert torch.allclose(nt_xent_grouped(z1, z2, distinct, temperature),
                              nt_xent_grouped_loop(z1, z2, distinct, temperature))
        repeated = torch.tensor([3, 4, 3, 5, 4, 3])
        loss = nt_xent_grouped(z1, z2, repeated, temperature)
        assert torch.allclose(loss, nt_xent_grouped_loop(z1, z2, repeated, temperature))
        assert not torch.allclose(loss, nt_xent(z1, z2, temperature))
        dot = nt_xent_grouped(z1, z2, repeated, temperature, normalize=False)       # CL4SRec's and DuoRec's similarity
        assert torch.allclose(dot, nt_xent_grouped_loop(z1, z2, repeated, temperature, normalize=False))
        assert not torch.allclose(dot, loss)
    # one group for all: only the positive is left, the loss is 0
    assert float(nt_xent_grouped(z1, z2, torch.zeros(6, dtype=torch.long))) == pytest.approx(0.0, abs=1e-12)


def test_coldstart_top_k_metrics_by_hand():
    # items 3..9; row 0: support 3 4, next item 5, then 9 and 6; row 1: support 7, next 8, then nothing
    support = torch.tensor([[3, 4], [7, 0]])
    query = torch.tensor([[5, 9, 6], [8, 0, 0]])
    scores = torch.tensor([[0.0, 0.0, 0.0, 9.0, 9.0, 6.0, 8.0, 7.0, 1.0, 0.5],
                           [0.0, 0.0, 0.0, 4.0, 5.0, 3.0, 2.0, 9.0, 1.0, 6.0]])
    result = top_k_metrics(scores, support, query, k=2)
    # row 0: candidates 5..9, 6 (8.0) and 7 (7.0) above 5 (6.0): rank 2, a miss; top 2 = 6 7: recall 1/3
    # row 1: candidates 3..9 but 7, above 8 (1.0): 3 4 5 6 9 -> rank 5, a miss; top 2 = 9 4: recall 0
    assert result == pytest.approx({"next_hr@2": 0.0, "next_ndcg@2": 0.0, "recall@2": (1 / 3 + 0) / 2})
    result = top_k_metrics(scores, support, query, k=3)
    # row 0: rank 2 < 3, ndcg 1/log2(4) = 0.5; top 3 = 6 7 5: recall 2/3; row 1: top 3 = 9 4 3: recall 0
    assert result == pytest.approx({"next_hr@3": 0.5, "next_ndcg@3": 0.25, "recall@3": (2 / 3) / 2})
    scores[1, 8] = 100.0
    result = top_k_metrics(scores, support, query, k=1)
    # row 0: top 1 = 6, one of its 3 query items; row 1: 8 first, a hit and its only query item
    assert result == pytest.approx({"next_hr@1": 0.5, "next_ndcg@1": 0.5, "recall@1": (1 / 3 + 1) / 2})


def test_coldstart_recall_never_counts_an_excluded_item():
    scores = torch.tensor([[0.0, 0.0, 0.0, 1.0, 2.0, 3.0]])               # 3 items; 3 and 4 are the support
    result = top_k_metrics(scores, torch.tensor([[3, 4]]), torch.tensor([[5, 4, 0]]), k=6)
    assert result["next_hr@6"] == 1.0
    assert result["recall@6"] == pytest.approx(0.5)                        # 5 is listed; 4 never can be
