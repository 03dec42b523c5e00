"""Next-item ranking: HR@k and NDCG@k of each row's last item given the items before it.

Each row of an interactions split is a user's history followed by the target (the leave-one-out splits of
:mod:`selfmeta.data.sources.interactions`). The model scores every catalogue item from the history; the
user's earlier items are removed from the ranking (the whole history, not only the ``max_length`` items the
model reads: the user has them, RecBole's full-sort rule), the target never is; a target the training split
never showed is never found. The rank of the target is the number of candidates scored above it plus the number tied with it
(ties count against the target, so a model that scores every item alike gets 0, not 1).

- full ranking: the target against every other candidate item (the protocol the field now asks for);
- sampled: the target against ``negatives`` items drawn uniformly from those the user has not interacted
  with (seeded); reported apart and labelled, since it inflates the figures (Krichene and Rendle, KDD 2020).

HR@k = 1 when the rank is below k; NDCG@k = 1 / log2(rank + 2) then (one relevant item), else 0.
"""

from __future__ import annotations

import numpy as np
import torch

from selfmeta.data.dataset import Dataset
from selfmeta.encoders.base import Backbone
from selfmeta.encoders.sequence import SPECIAL, ItemSequenceEncoder
from selfmeta.errors import SelfmetaError
from selfmeta.modalities.interactions import last_items

K = 10
NEGATIVES = 100
RARE = 5
SEED = 0


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """(N, V) scores, (N,) target ids, (N, V) bool items left out of the ranking -> (N,) int64 ranks from 0:
    candidates above the target plus candidates tied with it. The target itself is never left out."""
    rows = torch.arange(len(scores))
    candidate = ~exclude
    candidate[rows, targets] = False                                            # the target is not its own rival
    mine = scores[rows, targets].unsqueeze(1)                                   # (N, 1)
    return ((scores >= mine) & candidate).sum(1)


def sampled_candidates(exclude: torch.Tensor, targets: torch.Tensor, negatives: int,
                       generator: torch.Generator) -> torch.Tensor:
    """(N, V) bool: per row, ``negatives`` items drawn uniformly without replacement among those not excluded
    and not the target (all of them where fewer are left)."""
    n, v = exclude.shape
    allowed = ~exclude
    allowed[torch.arange(n), targets] = False
    keys = torch.rand(n, v, generator=generator).masked_fill(~allowed, -1.0)   # a random order of the allowed
    chosen = keys.topk(min(negatives, v), dim=1).indices
    out = torch.zeros(n, v, dtype=torch.bool)
    out.scatter_(1, chosen, True)
    return out & allowed


def hit_ndcg(ranks: torch.Tensor, k: int = K) -> dict[str, float]:
    """Mean HR@k and NDCG@k of ranks from 0 (one relevant item per row)."""
    ranks = ranks.double()
    hit = ranks < k
    return {f"hr@{k}": float(hit.double().mean()),
            f"ndcg@{k}": float(torch.where(hit, 1.0 / torch.log2(ranks + 2), 0.0).mean())}


def history_mask(histories: torch.Tensor, num_ids: int) -> torch.Tensor:
    """(N, L) item ids -> (N, V) bool: the items each row holds, and the special ids (never ranked)."""
    mask = torch.zeros(len(histories), num_ids, dtype=torch.bool)
    mask.scatter_(1, histories.long(), True)
    mask[:, :SPECIAL] = True
    return mask


def seen_mask(data: Dataset, num_ids: int, drop_last: bool) -> torch.Tensor:
    """(N, V) bool: every item of each user's whole sequence (``data.raw``, not only the ``max_length`` the
    model reads), without its last one where ``drop_last`` (the target), and the special ids; from the
    items tensor where the data has no raw sequences."""
    if data.raw is None or data.preprocessor is None:
        histories = last_items(data.items.long())[0] if drop_last else data.items.long()
        return history_mask(histories, num_ids)
    sequences = [s[:-1] if drop_last else s for s in data.raw]
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    flat = np.concatenate([np.asarray(s, dtype=str) for s in sequences]) if int(lengths.sum()) else np.array([], str)
    mask = torch.zeros(len(sequences), num_ids, dtype=torch.bool)
    mask[torch.arange(len(sequences)).repeat_interleave(lengths), torch.from_numpy(data.preprocessor.encode(flat))] = True
    mask[:, :SPECIAL] = True
    return mask


def popularity(train: Dataset, num_ids: int) -> torch.Tensor:
    """(V,) float: how often each item occurs in the training rows (the popularity baseline's scores)."""
    counts = torch.bincount(train.items.long().flatten(), minlength=num_ids).double()
    counts[:SPECIAL] = 0
    return counts


def sequence_encoder(backbone: Backbone) -> ItemSequenceEncoder:
    if not isinstance(backbone.encoder, ItemSequenceEncoder):
        raise SelfmetaError("the ranking protocol scores items from users' histories: it needs a run trained on "
                            f"interactions (encoder sasrec), not one with encoder {type(backbone.encoder).__name__}")
    return backbone.encoder


@torch.no_grad()
def model_scores(backbone: Backbone, histories: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(N, L) histories -> (N, V) float32 scores of every id from the model's user states (CPU)."""
    encoder = sequence_encoder(backbone)
    backbone.eval()
    out = [encoder.scores(backbone(histories[i:i + batch_size].long())).float()
           for i in range(0, len(histories), batch_size)]
    return torch.cat(out)


def evaluate_ranking(scores: torch.Tensor, data: Dataset, k: int = K, negatives: int = NEGATIVES,
                     seed: int = SEED, counts: torch.Tensor | None = None) -> dict:
    """HR@k and NDCG@k of every row's last item under ``scores`` (N, V), full and against sampled negatives;
    with ``counts`` (V,) of the training rows, also full on the rows whose target is rare (seen at most
    ``RARE`` times in training: where side information should help)."""
    histories, targets = last_items(data.items.long())
    usable = (histories != 0).any(1)                                            # rows with a history item
    targets, scores = targets[usable], scores[usable]
    exclude = seen_mask(data, scores.shape[1], drop_last=True)[usable]
    ranks = target_ranks(scores, targets, exclude)
    ranks[targets < SPECIAL] = scores.shape[1]                                  # an unseen item is never found
    generator = torch.Generator().manual_seed(seed)
    sampled = ~sampled_candidates(exclude, targets, negatives, generator)
    result = {**hit_ndcg(ranks, k), f"sampled_{negatives}": hit_ndcg(target_ranks(scores, targets, sampled), k),
              "users": int(usable.sum()), "unseen_targets": int((targets < SPECIAL).sum())}
    if counts is not None:
        rare = counts[targets] <= RARE
        if bool(rare.any()):
            result["rare_targets"] = {**hit_ndcg(ranks[rare], k), "users": int(rare.sum()), "most_seen": RARE}
    return result


def ranking_report(backbone: Backbone, train: Dataset, test: Dataset, k: int = K, negatives: int = NEGATIVES,
                   seed: int = SEED) -> dict:
    """The ranking protocol: the model and, for scale, popularity (item counts of the train split), each full
    and against ``negatives`` sampled items."""
    histories, _ = last_items(test.items.long())
    scores = model_scores(backbone, histories)
    counts = popularity(train, scores.shape[1])
    model = evaluate_ranking(scores, test, k, negatives, seed, counts)
    baseline = evaluate_ranking(counts.float().expand(len(test), -1).clone(), test, k, negatives, seed)
    return {"protocol": "ranking", "k": k, "items": int(scores.shape[1] - SPECIAL), **model,
            "popularity": {key: value for key, value in baseline.items() if key not in ("users", "unseen_targets")}}


def recommend(backbone: Backbone, data: Dataset, k: int, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Users' whole histories (a prepared interactions Dataset) -> (ids (N, k) int64, scores (N, k) float32) of
    the k best items for each user, without any item the user has (``exclude_seen``); -inf where fewer are left."""
    scores = model_scores(backbone, data.items)
    if exclude_seen:
        scores = scores.masked_fill(seen_mask(data, scores.shape[1], drop_last=False), float("-inf"))
    k = min(k, scores.shape[1] - SPECIAL)
    top = scores.topk(k, dim=1)
    return top.indices.numpy(), top.values.numpy()
