"""What each training step feeds the method: item batches (self-supervised) or episodes (meta-learning,
from a task constructor of :mod:`selfmeta.data.tasks`).

A plan is a pure function of (step, rank) -> the indices of the items in the step's batch, so that a
resumed run replays exactly the batches of the interrupted one. ``steps_per_epoch`` sets how often the
engine checkpoints and calls ``on_epoch_start``.
"""

from __future__ import annotations

import torch

from selfmeta.data.dataset import Dataset
from selfmeta.data.episodes import EpisodeSpec
from selfmeta.data.tasks import TaskConstructor, build_tasks
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import check_compatible, embed, load_backbone
from selfmeta.errors import SelfmetaError


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of the data for one epoch: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


class ItemBatches:
    """Every epoch a fresh permutation of the items, cut into global batches; each rank takes its slice."""

    augment = False  # self-supervised methods make their own views

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


def batch_plan(cfg: TrainConfig, data: Dataset, world: int) -> ItemBatches | TaskConstructor:
    """Item batches for self-supervised methods; the configured task constructor for meta-learners.

    ``tasks.encoder=RUN`` (CACTUs' embedding) becomes the frozen features of the data under that run, so
    that the data layer never loads a model.
    """
    if cfg.tasks is None:
        return ItemBatches(len(data), cfg.batch_size, world, cfg.seed)
    spec = EpisodeSpec(cfg.ways, cfg.shots, cfg.queries)
    run = cfg.task_options.get("encoder")
    features = None
    if run is not None:
        backbone, description = load_backbone(run)
        features = embed(backbone, check_compatible(description, data))                                                 # (M, F)
    return build_tasks(cfg.tasks, data, spec, cfg.tasks_per_step, world, cfg.seed, cfg.task_options, features)
