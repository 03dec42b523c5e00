"""Few-shot episodes from any labelled data: N ways, K shots, Q queries, many episodes at once.

An episode is a tensor of item indices shaped ``(N, K + Q)``: row ``n`` holds the items of the episode's
n-th class, the first K of them the support, the other Q the queries. The episode's own labels are the
row numbers, so a learner needs no labels beyond the layout (tasks built from unlabeled data use the
same layout with pseudo-classes). Sampling is batched: ``T`` episodes come out as one ``(T, N, K + Q)``
tensor, drawn with a ``torch.Generator`` so that a seed fixes them.

Example::

    sampler = EpisodeSampler(data.y, EpisodeSpec(ways=5, shots=1, queries=15))
    idx = sampler.sample(32, torch.Generator().manual_seed(0))    # (32, 5, 16)
    x = data.x[idx.flatten()]                                     # (32*5*16, C, H, W)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfmeta.errors import SelfmetaError


@dataclass(frozen=True)
class EpisodeSpec:
    ways: int     # N classes per episode
    shots: int    # K support items per class
    queries: int  # Q query items per class (0: an episode of items to cluster, see evaluation.episode_cluster)

    def __post_init__(self) -> None:
        for name, least in (("ways", 1), ("shots", 1), ("queries", 0)):  # no queries: items to cluster
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise SelfmetaError(f"{name} must be an integer >= {least}, got {value!r}")
        if self.ways < 2:
            raise SelfmetaError(f"an episode needs at least 2 ways, got {self.ways}")

    @property
    def per_class(self) -> int:
        return self.shots + self.queries

    @property
    def size(self) -> int:
        """Items in one episode: N * (K + Q)."""
        return self.ways * self.per_class

    def labels(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The episode's support labels (N*K,) and query labels (N*Q,), in the order of :func:`split`."""
        ways = torch.arange(self.ways, device=device)
        return ways.repeat_interleave(self.shots), ways.repeat_interleave(self.queries)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T * N * (K+Q), ...) items in episode layout -> support (T, N*K, ...) and queries (T, N*Q, ...)."""
        per_task = x.reshape(-1, self.ways, self.per_class, *x.shape[1:])                  # (T, N, K+Q, ...)
        t = per_task.shape[0]
        support = per_task[:, :, : self.shots].reshape(t, self.ways * self.shots, *x.shape[1:])
        query = per_task[:, :, self.shots :].reshape(t, self.ways * self.queries, *x.shape[1:])
        return support, query


def class_members(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M,) int labels -> members (C, L) item indices of each present class, right-padded with -1, and
    counts (C,). Rows follow the sorted label values; absent label values get no row, and items labelled
    -1 (or any negative value) belong to no class (a clustering's discarded items)."""
    labels = torch.as_tensor(labels).long().cpu()
    kept = (labels >= 0).nonzero().squeeze(1)                                              # (M',)
    if len(kept) == 0:
        raise SelfmetaError("no item has a class label")
    order = kept[torch.argsort(labels[kept], stable=True)]                                 # (M',)
    values, counts = torch.unique_consecutive(labels[order], return_counts=True)           # (C,), (C,)
    starts = torch.cumsum(counts, 0) - counts                                               # (C,)
    width = int(counts.max())
    pos = torch.arange(width).unsqueeze(0)                                                  # (1, L)
    valid = pos < counts.unsqueeze(1)                                                       # (C, L)
    gather = (starts.unsqueeze(1) + pos).clamp_max(len(order) - 1)                          # (C, L)
    members = torch.where(valid, order[gather], torch.full_like(gather, -1))
    return members, counts


class EpisodeSampler:
    """Draws episodes from labelled items: a class is eligible when it has at least K + Q items.

    Args:
        labels: (M,) class labels of the items episodes are drawn from (true labels or pseudo-labels).
        spec: ways, shots and queries.
    """

    def __init__(self, labels: torch.Tensor, spec: EpisodeSpec) -> None:
        if labels is None:
            raise SelfmetaError("episodes need labels (or pseudo-labels); the data has none")
        self.spec = spec
        self.members, self.counts = class_members(labels)
        small = self.counts < spec.per_class
        if bool(small.any()):
            raise SelfmetaError(
                f"{int(small.sum())} of {len(self.counts)} classes have fewer than shots + queries = "
                f"{spec.per_class} items (the smallest has {int(self.counts.min())}); lower --shots or --queries"
            )
        if len(self.counts) < spec.ways:
            raise SelfmetaError(f"{spec.ways}-way episodes need at least {spec.ways} classes, the data has {len(self.counts)}")

    def sample(self, num_tasks: int, generator: torch.Generator) -> torch.Tensor:
        """(T, N, K+Q) int64 item indices of ``num_tasks`` episodes: N distinct classes per episode, K+Q
        distinct items per class (without replacement, so support and queries never share an item)."""
        spec, (c, width) = self.spec, self.members.shape
        # N distinct classes per task: the first N of a random permutation of the classes.
        classes = torch.rand(num_tasks, c, generator=generator).argsort(dim=1)[:, : spec.ways]   # (T, N)
        # K+Q distinct members per class: random keys, padding pushed last, then the first K+Q.
        keys = torch.rand(num_tasks, spec.ways, width, generator=generator)                       # (T, N, L)
        keys = keys.masked_fill(self.members[classes] < 0, 2.0)
        slots = keys.argsort(dim=2)[:, :, : spec.per_class]                                       # (T, N, K+Q)
        return self.members[classes.unsqueeze(2), slots]


def episode_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of one training step's episodes on one rank: a pure function of (seed, step, rank),
    so that a resumed run draws exactly the episodes the interrupted one would have."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 64 + rank)
