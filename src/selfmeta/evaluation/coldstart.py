"""The cold-start protocol: users seen only through their first few interactions, each a task.

For every user of the data (the held-out cold users: ``--users cold``) with more than ``shots``
interactions: the support is their first ``shots`` items, the query the ``queries`` items after them. The
model's state after the support (adapted or not) ranks every catalogue item but the support's own:

- ``next_hr@10``, ``next_ndcg@10``: of the item right after the support (ranks as in
  :mod:`selfmeta.evaluation.ranking`: ties count against it);
- ``recall@10``: the share of the query items in the top 10 (a steadier figure over more items).

Adaptation (``adapt``): ``none`` (the encoder's state after the support), ``finetune`` (``steps`` plain
gradient steps of rate ``lr`` on the state, fitting the support items: the baseline), ``meta`` (a
``coldstart`` run's own learned steps and rates). ``popularity`` ranks by the items' counts in the data the
protocol is given for it (the warm users).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from selfmeta.encoders.base import Backbone
from selfmeta.encoders.sequence import SPECIAL
from selfmeta.errors import SelfmetaError
from selfmeta.evaluation.ranking import history_mask, sequence_encoder, target_ranks
from selfmeta.objectives.coldstart import adapt_states

K = 10
ADAPTATIONS = ("none", "finetune", "meta")


def first_items(vocabulary, raw: np.ndarray, shots: int, queries: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's first ``shots + queries`` items as ids of the run's vocabulary -> (support (N, shots),
    query (N, queries) with 0 where a user has fewer), the users with more than ``shots`` items only."""
    first = copy.copy(vocabulary)
    first.keep, first.max_length = "first", shots + queries
    rows = first(raw).long()
    rows = rows[(rows != 0).sum(1) > shots]
    if len(rows) == 0:
        raise SelfmetaError(f"no user has more than {shots} interactions: nothing to predict after the support")
    return rows[:, :shots], rows[:, shots:]


def top_k_metrics(scores: torch.Tensor, support: torch.Tensor, query: torch.Tensor, k: int = K) -> dict[str, float]:
    """(N, V) scores, (N, s) support ids, (N, q) query ids (0 = none) -> next-item HR/NDCG@k and recall@k."""
    exclude = history_mask(support, scores.shape[1])
    ranks = target_ranks(scores, query[:, 0], exclude).double()
    values, top = scores.masked_fill(exclude, float("-inf")).topk(k, dim=1)                # (N, k)
    present = query >= SPECIAL
    listed = (query.unsqueeze(2) == top.unsqueeze(1)) & torch.isfinite(values).unsqueeze(1)  # (N, q, k)
    found = listed.any(2) & present                                                        # (N, q)
    return {f"next_hr@{k}": float((ranks < k).double().mean()),
            f"next_ndcg@{k}": float(torch.where(ranks < k, 1 / torch.log2(ranks + 2), 0.0).mean()),
            f"recall@{k}": float((found.sum(1) / present.sum(1).clamp_min(1)).mean())}


def cold_start_report(backbone: Backbone, vocabulary, raw: np.ndarray, shots: int, queries: int = 10,
                      adapt: str = "none", steps: int = 5, lr: float | torch.Tensor = 0.1,
                      popularity: torch.Tensor | None = None, k: int = K) -> dict:
    """The cold-start protocol over the users of ``raw`` (their item-ID sequences) for a model trained with
    ``vocabulary``; see the module docstring. ``popularity``: (V,) item counts for the baseline."""
    if adapt not in ADAPTATIONS:
        raise SelfmetaError(f"--adapt {adapt!r} is not a cold-start adaptation; valid: {', '.join(ADAPTATIONS)}")
    encoder = sequence_encoder(backbone)
    backbone.eval()
    support, query = first_items(vocabulary, raw, shots, queries)
    with torch.no_grad():
        u = backbone(support)
    if adapt != "none" and steps > 0:
        valid = support >= SPECIAL
        with torch.enable_grad():
            u = adapt_states(encoder.catalogue_scores, u, support - SPECIAL, valid, steps, lr).detach()
    with torch.no_grad():
        scores = encoder.scores(u).float()
    result = {"protocol": "coldstart", "shots": shots, "queries": queries, "adapt": adapt, "users": len(support),
              **top_k_metrics(scores, support, query, k)}
    if adapt != "none":
        result.update(steps=steps, lr=float(torch.as_tensor(lr).float().mean()))
    if popularity is not None:
        result["popularity"] = top_k_metrics(popularity.float().expand(len(support), -1).clone(), support, query, k)
    return result
