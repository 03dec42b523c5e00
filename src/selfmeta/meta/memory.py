"""Learning to Remember Rare Events (Kaiser, Nachum, Roy & Bengio, ICLR 2017): a key-value memory module.

The memory holds M slots: a key (a unit vector in the backbone's feature space), a value (a class id, -1
for an empty slot, whose key is zero) and an age. A query is answered by its nearest key (cosine
similarity); the embedding is trained with the paper's margin loss against the memory (the best key of the
query's class must beat the best key of any other class by ``margin``), and the memory is updated after
every batch, without gradient: a correct nearest key absorbs the query (key <- normalize(key + q)), a wrong
one leaves the query to be written into the oldest slot. Every slot ages by one per write.

The search is exact over the whole memory; the paper's top-k neighbour pool (k=256) and its approximate
nearest-neighbour variant are only a speed-up and change no rule here. The memory lives in buffers, so it is
saved with the checkpoint, and it persists across training episodes: each episode's classes get fresh
global ids (``next_value`` hands them out), so older entries stay, age, and act as negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.encoders.base import Backbone
from selfmeta.errors import SelfmetaError
from selfmeta.meta.base import METALEARNERS, MetaLearner
from selfmeta.methods.base import StepOutput
from selfmeta.modalities.base import Views
from selfmeta.options import Option

NO_KEY = -2.0  # the score of a class with no key in memory: below any cosine similarity


def read(keys: torch.Tensor, values: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, F) keys, (M,) values (-1 empty), (B, F) unit queries -> the nearest non-empty slot (B,) and its
    value (B,) by cosine similarity; value -1 (and slot 0) for every query while the memory is empty."""
    sims = (q.to(keys.dtype) @ keys.T).masked_fill(values < 0, float("-inf"))     # (B, M)
    slot = sims.argmax(1)                                                          # (B,)
    return slot, values[slot]


def margin_loss(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, labels: torch.Tensor,
                margin: float) -> torch.Tensor:
    """The paper's memory loss of each query: (B, F) unit queries, (M, F) keys, (M,) values, (B,) labels ->
    (B,) relu(neg - pos + margin).

    ``pos``: the best similarity among the keys holding the query's label (0 where there is none, as in the
    paper); ``neg``: the best among the non-empty keys holding another value (no negative: loss 0). The
    memory is not differentiated (keys detached): the gradient flows into ``q`` only.
    """
    sims = q @ keys.detach().to(q.dtype).T                                         # (B, M)
    same = values.unsqueeze(0) == labels.unsqueeze(1)                              # (B, M)
    other = (values >= 0).unsqueeze(0) & ~same                                     # (B, M)
    pos = sims.masked_fill(~same, float("-inf")).amax(1)                           # (B,)
    neg = sims.masked_fill(~other, float("-inf")).amax(1)                          # (B,)
    pos = torch.where(same.any(1), pos, torch.zeros_like(pos))
    return torch.where(other.any(1), F.relu(neg - pos + margin), torch.zeros_like(pos))


def write(keys: torch.Tensor, values: torch.Tensor, ages: torch.Tensor, q: torch.Tensor, labels: torch.Tensor,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's memory update for a batch: (M, F) keys, (M,) values, (M,) ages, (B, F) unit items, (B,)
    labels >= 0 -> new (keys, values, ages); the inputs are left alone and ``q`` is not differentiated.

    Every slot ages by one. An item whose nearest key already holds its label (a hit) merges into it:
    key <- normalize(key + q), age 0. Any other item (a miss) is written into the oldest slot: value = its
    label, key = q, age 0. Batch semantics:

    - every item sees the memory as it was before the write: two items of one new class both miss, and take
      two slots;
    - the hits of one slot are summed, then the key normalized once: normalize(key + q1 + q2);
    - the misses take distinct slots, oldest first in item order: empty slots before any filled one, then
      by decreasing age, ties broken at random (``generator``; the global one when None); a slot hit in the
      same batch is never overwritten. Hence a batch of B <= M items always fits.
    """
    m, b = len(values), len(labels)
    if b > m:
        raise SelfmetaError(f"a write of {b} items does not fit a memory of {m} slots; raise method.size")
    q = q.detach().to(keys.dtype)
    slot, value = read(keys, values, q)
    hit = value == labels                                                          # (B,); -1 is never a label
    keys, values, ages = keys.clone(), values.clone(), ages + 1
    merged = slot[hit].unique()                                                    # (H,)
    keys.index_add_(0, slot[hit], q[hit])
    keys[merged] = F.normalize(keys[merged], dim=1)
    ages[merged] = 0
    # oldest first: integer ages plus noise in [0, 1) break ties only; empty slots lifted above every age
    noise = torch.rand(m, generator=generator, dtype=torch.float64).to(keys.device)
    lift = (values < 0).to(torch.float64) * (float(ages.max()) + 1)
    score = (ages.to(torch.float64) + lift + noise).index_fill(0, merged, float("-inf"))  # (M,)
    miss = ~hit
    target = score.topk(int(miss.sum())).indices                                   # (B - hits,) distinct slots
    keys[target], values[target], ages[target] = q[miss], labels[miss], 0
    return keys, values, ages


def class_scores(keys: torch.Tensor, values: torch.Tensor, q: torch.Tensor, first: torch.Tensor,
                 ways: int) -> torch.Tensor:
    """(M, F) keys, (M,) values, (B, F) unit queries -> (B, N) scores of the classes with ids first..first+N-1:
    the best cosine similarity among the keys holding each id (``NO_KEY`` where none does)."""
    cls = values - first                                                           # (M,) class of each slot
    held = ((cls >= 0) & (cls < ways)).nonzero().squeeze(1)                        # (P,) slots of these classes
    sims = q.to(keys.dtype) @ keys[held].T                                         # (B, P)
    out = torch.full((len(q), ways), NO_KEY, dtype=sims.dtype, device=sims.device)
    return out.scatter_reduce(1, cls[held].expand_as(sims), sims, "amax")


@METALEARNERS.register("memory")
class Memory(MetaLearner):
    """A persistent key-value memory on top of the backbone, trained with the paper's margin loss.

    Each training episode (a loop over the T tasks of a step) gets N fresh class ids; its support is written
    into the memory, its queries are scored by the margin loss against the whole memory (earlier episodes'
    entries included, as negatives), then written too. ``accuracy`` logs the queries classified by the
    nearest key among this episode's classes. ``adapt_predict`` writes a new task's support into a copy of
    the memory and scores the queries by their best key of each class (the module's state is left alone,
    so evaluation changes nothing and every episode sees the same memory). ``observe`` runs the memory on a
    stream (predict each item, then remember it), for rare-event recall benchmarks.

    With several processes, DistributedDataParallel broadcasts rank 0's buffers before every step, so the
    memory is rank 0's: the other ranks' writes are dropped.

    Args:
        size: M, the memory slots (the paper: 8192); at least one episode's items.
        margin: alpha of the margin loss (the paper: 0.1).
        negatives: which keys the margin loss contrasts a query with. ``memory`` is the paper's rule, every key
            of another value. In meta-training a class recurs in later episodes under a fresh id, so the memory
            holds keys of the query's own class under other ids: as negatives they push a class apart from
            itself, and on Omniglot the loss stalled at the margin (72% at 5-way 1-shot after 90 s). The
            default, ``episode``, contrasts with the keys of the episode's other classes only; the memory still
            persists, ages and evicts across episodes.
        key_dim: size of the keys: a learned linear map of the backbone's features, as the paper's query network
            ends in a fully connected layer (0: the features themselves). Features after a ReLU are all
            non-negative, so their cosine similarities crowd near 1 and the margin loss stalls at ``margin``:
            with Conv-4 on Omniglot the memory reached 72% at 5-way 1-shot in 90 s without the map.
    """

    description = "Key-value memory of rare events: nearest key by cosine, margin loss, oldest-slot writes"
    paper = "Kaiser, Nachum, Roy & Bengio, Learning to Remember Rare Events, ICLR 2017"
    options = {
        "size": Option("memory slots, at least one episode's items (paper: 8192)", ge=1),
        "margin": Option("alpha, the margin between the best key of the right class and of another (paper: 0.1)", ge=0),
        "negatives": Option("the loss's negatives: the keys of the episode's other classes, or every key in memory "
                            "(the paper's rule; right only where classes never recur under new ids)",
                            choices=("episode", "memory")),
        "key_dim": Option("size of the keys, a learned linear map of the features (0: the features themselves)", ge=0),
    }

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, size: int = 8192,
                 margin: float = 0.1, negatives: str = "episode", key_dim: int = 128) -> None:
        super().__init__(backbone, views, spec)
        if size < spec.size:
            raise SelfmetaError(f"memory: a memory of {size} slots is smaller than one episode of {spec.size} items "
                                f"({spec.ways} ways x {spec.per_class} shots + queries); raise method.size")
        self.margin = float(margin)
        self.episode_negatives = negatives == "episode"
        self.project = nn.Linear(backbone.num_features, key_dim) if key_dim else nn.Identity()
        dim = key_dim or backbone.num_features
        self.register_buffer("keys", torch.zeros(size, dim))                                    # (M, D) unit rows
        self.register_buffer("values", torch.full((size,), -1, dtype=torch.long))               # (M,) -1: empty
        self.register_buffer("ages", torch.zeros(size, dtype=torch.long))                       # (M,)
        self.register_buffer("next_value", torch.zeros((), dtype=torch.long))                   # next fresh class id

    def _embed(self, *parts: torch.Tensor) -> list[torch.Tensor]:
        """(T, n_i, ...) item tensors -> (T, n_i, F) unit embeddings in the memory's dtype (float32 even under
        autocast), one backbone call."""
        t = parts[0].shape[0]
        feats = self.backbone(torch.cat([p.flatten(0, 1) for p in parts]))                      # (T*sum n_i, F)
        with torch.autocast(feats.device.type, enabled=False):
            z = F.normalize(self.project(feats.to(self.keys.dtype)), dim=1)                     # (T*sum n_i, D)
        return [c.reshape(t, -1, z.shape[1]) for c in z.split([p.shape[0] * p.shape[1] for p in parts])]

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        support, query = self.spec.split(x)
        support_y, query_y = self.spec.labels(x.device)
        ways = self.spec.ways
        s, q = self._embed(support, query)                                                      # (T, NK, F), (T, NQ, F)
        with torch.autocast(x.device.type, enabled=False):
            keys, values, ages = self.keys, self.values, self.ages
            losses, correct = [], []
            for t in range(s.shape[0]):
                first = self.next_value + t * ways                                              # this task's first id
                keys, values, ages = write(keys, values, ages, s[t], first + support_y)
                # Negatives: this episode's other classes, or (negatives="memory", the paper's rule) every key.
                held = (values >= first) & (values < first + ways) if self.episode_negatives else values >= 0
                losses.append(margin_loss(q[t], keys[held], values[held], first + query_y, self.margin))  # (NQ,)
                with torch.no_grad():
                    correct.append(class_scores(keys, values, q[t], first, ways).argmax(1) == query_y)
                keys, values, ages = write(keys, values, ages, q[t], first + query_y)
            loss = torch.cat(losses).mean()
        with torch.no_grad():
            self.keys.copy_(keys)
            self.values.copy_(values)
            self.ages.copy_(ages)
            self.next_value += s.shape[0] * ways
        return StepOutput(loss, {"accuracy": float(torch.cat(correct).float().mean())})

    def adapt_predict(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Per episode: fresh ids for its classes, the support written into a copy of the memory, each query
        scored by its best cosine similarity to the keys of each class -> (T, Q, N)."""
        ways = int(support_y.max()) + 1
        s, q = self._embed(support, query)                                                      # (T, S, F), (T, Q, F)
        with torch.autocast(support.device.type, enabled=False):
            out = []
            for t in range(s.shape[0]):
                keys, values, _ = write(self.keys, self.values, self.ages, s[t], self.next_value + support_y)
                out.append(class_scores(keys, values, q[t], self.next_value, ways))             # (Q, N)
        return torch.stack(out)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """Items x (B, ...) -> (B,) the value of each one's nearest key in the whole memory (-1 while it is
        empty), or among the keys holding one of the ``candidates`` ids (C,) where given. Reads only."""
        return self._read(self._embed(x.unsqueeze(0))[0][0], candidates)

    def _read(self, z: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast(z.device.type, enabled=False):
            allowed = self.values if candidates is None else torch.where(
                torch.isin(self.values, candidates.to(self.values.device)), self.values, -1)  # others: as empty
            return read(self.keys, allowed, z)[1]

    @torch.no_grad()
    def observe(self, x: torch.Tensor, labels: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """A stream step: items x (B, ...) with global labels (B,) >= 0 -> (B,) predictions (as ``predict``),
        then the items are written. Items of one call are predicted from the memory before the call, never
        from each other. ``next_value`` is raised past the labels, so later episodes' fresh ids never
        collide with them."""
        labels = labels.to(self.values.device)
        if bool((labels < 0).any()):
            raise SelfmetaError(f"observe takes labels >= 0 (-1 marks an empty slot), got {int(labels.min())}")
        z = self._embed(x.unsqueeze(0))[0][0]                                                   # (B, D)
        predicted = self._read(z, candidates)
        with torch.autocast(z.device.type, enabled=False):
            keys, values, ages = write(self.keys, self.values, self.ages, z, labels)
        self.keys.copy_(keys)
        self.values.copy_(values)
        self.ages.copy_(ages)
        self.next_value.copy_(torch.cat([labels + 1, self.next_value.view(1)]).max())
        return predicted
