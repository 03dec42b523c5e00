"""What each training step feeds the method: item batches (self-supervised) or episodes (meta-learning).

A plan is a pure function of (step, rank) -> the indices of the items in the step's batch, so that a
resumed run replays exactly the batches of the interrupted one. ``steps_per_epoch`` sets how often the
engine checkpoints and calls ``on_epoch_start``.
"""

from __future__ import annotations

import torch

from selfmeta.data.dataset import Dataset
from selfmeta.data.episodes import EpisodeSampler, EpisodeSpec, episode_generator
from selfmeta.engine.config import TrainConfig
from selfmeta.errors import SelfmetaError


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of the data for one epoch: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


class ItemBatches:
    """Every epoch a fresh permutation of the items, cut into global batches; each rank takes its slice."""

    def __init__(self, n: int, batch_size: int, world: int, seed: int) -> None:
        self.global_batch = batch_size * world
        if self.global_batch > n:
            raise SelfmetaError(
                f"batch size {batch_size} x {world} process(es) = {self.global_batch} is larger than the data ({n} items)"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.steps_per_epoch = n // self.global_batch
        self.items_per_step = self.global_batch
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def indices(self, step: int, rank: int) -> torch.Tensor:
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self.n, self.seed, epoch)
        begin = within * self.global_batch + rank * self.batch_size
        return self._order[begin : begin + self.batch_size]


class EpisodeBatches:
    """``tasks_per_step`` episodes per rank and step, drawn from the data's labels; items in episode layout,
    (T * N * (K+Q),). An epoch is as many steps as show about as many items as the data holds."""

    def __init__(self, labels: torch.Tensor | None, spec: EpisodeSpec, tasks_per_step: int, world: int, seed: int) -> None:
        if labels is None:
            raise SelfmetaError("episodes from labels need labelled data; this data has no labels")
        self.sampler = EpisodeSampler(labels, spec)
        self.tasks, self.seed = tasks_per_step, seed
        self.items_per_step = spec.size * tasks_per_step * world
        self.steps_per_epoch = max(1, len(labels) // self.items_per_step)

    def indices(self, step: int, rank: int) -> torch.Tensor:
        return self.sampler.sample(self.tasks, episode_generator(self.seed, step, rank)).flatten()


def batch_plan(cfg: TrainConfig, data: Dataset, world: int) -> ItemBatches | EpisodeBatches:
    if cfg.tasks is None:
        return ItemBatches(len(data), cfg.batch_size, world, cfg.seed)
    spec = EpisodeSpec(cfg.ways, cfg.shots, cfg.queries)
    return EpisodeBatches(data.y, spec, cfg.tasks_per_step, world, cfg.seed)
