"""Task constructors: where the episodes of meta-training come from. One contract, one registry.

Every constructor gives, for each training step and rank, the item indices of ``tasks_per_step``
episodes in episode layout, ``(T * N * (K+Q),)`` (see :mod:`selfmeta.data.episodes`), as a pure function
of (seed, step, rank) so that resumed runs replay exactly. Constructors with ``augment = True`` repeat
items within an episode: the engine then applies the data's views to every item, so that the copies of an
item are different augmentations of it.

- ``labels``: N-way K-shot episodes from the data's classes (supervised meta-learning);
- ``umtra`` (Khodadadeh et al. 2019): N random items become N classes; support and queries are views;
- ``cactus`` (Hsu et al. 2019): k-means partitions of an embedding give pseudo-classes;
- ``metacontrastive``: each task is a contrastive problem of N items, one support view and one query
  view each: adapting on the support views and scoring the query views is a contrastive loss over tasks.

The constructors other than ``labels`` never read the data's labels (``uses_labels = False``).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch

from selfmeta.data.dataset import Dataset
from selfmeta.data.episodes import EpisodeSampler, EpisodeSpec, episode_generator
from selfmeta.errors import SelfmetaError
from selfmeta.options import Option, check_options
from selfmeta.registry import Registry

log = logging.getLogger(__name__)


class TaskConstructor:
    """Contract: ``steps_per_epoch``, ``items_per_step`` (all ranks) and ``indices(step, rank)``.

    Options are the constructor's keyword arguments after those in ``TASK_ARGS``, declared in ``options``.
    """

    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    augment: ClassVar[bool] = False      # items repeat within an episode: views must tell the copies apart
    uses_labels: ClassVar[bool] = False

    def __init__(self, data: Dataset, spec: EpisodeSpec, tasks_per_step: int, world: int, seed: int) -> None:
        self.spec, self.tasks, self.seed = spec, tasks_per_step, seed
        self.items_per_step = spec.size * tasks_per_step * world
        self.steps_per_epoch = max(1, len(data) // self.items_per_step)

    def indices(self, step: int, rank: int) -> torch.Tensor:
        raise NotImplementedError


TASKS: Registry[type[TaskConstructor]] = Registry("task constructor")
# Constructor arguments the engine supplies (``features``: the frozen features of ``tasks.encoder=RUN``).
TASK_ARGS = ("data", "spec", "tasks_per_step", "world", "seed", "features")


class _SampledTasks(TaskConstructor):
    """Episodes drawn from a fixed labelling of the items (true classes or pseudo-classes)."""

    def __init__(self, data: Dataset, spec: EpisodeSpec, tasks_per_step: int, world: int, seed: int,
                 labelings: list[torch.Tensor]) -> None:
        super().__init__(data, spec, tasks_per_step, world, seed)
        self.samplers = [EpisodeSampler(labels, spec) for labels in labelings]

    def indices(self, step: int, rank: int) -> torch.Tensor:
        g = episode_generator(self.seed, step, rank)
        if len(self.samplers) == 1:
            return self.samplers[0].sample(self.tasks, g).flatten()
        # each task from one labelling, chosen at random (CACTUs draws a partition per task)
        which = torch.randint(len(self.samplers), (self.tasks,), generator=g)
        out = torch.empty(self.tasks, self.spec.ways, self.spec.per_class, dtype=torch.long)
        for p in which.unique().tolist():
            rows = (which == p).nonzero().squeeze(1)
            out[rows] = self.samplers[p].sample(len(rows), g)
        return out.flatten()


@TASKS.register("labels")
class LabelTasks(_SampledTasks):
    """N-way K-shot episodes from the data's own classes (supervised meta-learning)."""

    description = "N-way K-shot episodes from the data's classes (supervised)"
    paper = "Vinyals et al., Matching Networks for One Shot Learning, NeurIPS 2016 (the episodic protocol)"
    uses_labels = True

    def __init__(self, data: Dataset, spec: EpisodeSpec, tasks_per_step: int, world: int, seed: int) -> None:
        if data.y is None:
            raise SelfmetaError("episodes from labels need labelled data; this data has no labels")
        super().__init__(data, spec, tasks_per_step, world, seed, [data.y])


@TASKS.register("umtra")
class UMTRA(TaskConstructor):
    """N distinct random items are the N classes of a task (with a large unlabeled set they rarely share a
    true class); every one of the K+Q copies of an item is an independent augmentation of it, so the
    support is K views of each item and the queries are Q other views."""

    description = "UMTRA: N random items as N classes, support and queries are augmented views"
    paper = "Khodadadeh, Boloni & Shah, Unsupervised Meta-Learning for Few-Shot Image Classification, NeurIPS 2019"
    augment = True

    def __init__(self, data: Dataset, spec: EpisodeSpec, tasks_per_step: int, world: int, seed: int) -> None:
        super().__init__(data, spec, tasks_per_step, world, seed)
        self.n = len(data)
        if self.n < spec.ways * tasks_per_step:
            raise SelfmetaError(f"{tasks_per_step} tasks of {spec.ways} items need {spec.ways * tasks_per_step} items, "
                                f"the data has {self.n}")
        self.items_per_step = spec.ways * tasks_per_step * world  # distinct items; each is viewed K+Q times
        self.steps_per_epoch = max(1, self.n // self.items_per_step)

    def indices(self, step: int, rank: int) -> torch.Tensor:
        g = episode_generator(self.seed, step, rank)
        items = torch.randperm(self.n, generator=g)[: self.tasks * self.spec.ways]              # distinct
        return items.view(self.tasks, self.spec.ways, 1).expand(-1, -1, self.spec.per_class).flatten()


@TASKS.register("metacontrastive")
class MetaContrastive(UMTRA):
    """A task is a contrastive problem: N items, one support view and one query view each (K = Q = 1).
    The meta-learner adapts on the support views (ProtoNet: the views are the prototypes; MAML: inner
    steps on them) and is scored on the query views against all N items of the task, the other items being
    the negatives; the meta-loss is the mean over tasks. With ProtoNet and the cosine distance this is
    InfoNCE within each task; with MAML the encoder is meta-trained to adapt to contrastive tasks."""

    description = "meta-contrastive: each task is N positive pairs of views (support/query) against each other"
    paper = "contrastive tasks (Chen et al., SimCLR, 2020) meta-learned as episodes (Khodadadeh et al. 2019)"

    def __init__(self, data: Dataset, spec: EpisodeSpec, tasks_per_step: int, world: int, seed: int) -> None:
        if spec.shots != 1 or spec.queries != 1:
            raise SelfmetaError(f"metacontrastive tasks are pairs of views: --shots 1 --queries 1 (got {spec.shots}, {spec.queries})")
        super().__init__(data, spec, tasks_per_step, world, seed)


@TASKS.register("cactus")
class CACTUs(_SampledTasks):
    """Pseudo-classes from k-means on an embedding of the unlabeled data: ``partitions`` clusterings with
    ``clusters`` centroids each (different seeds, and each one on the features scaled by random positive
    weights, as the paper does to diversify the partitions); each task picks one partition and N of its
    clusters that hold at least K+Q items.

    Args:
        features: (M, F) the items' features to cluster, which the engine computes from ``encoder``;
            None clusters the raw inputs.
        encoder: a ``selfmeta pretrain`` run (or ``.safetensors`` file) whose frozen features are clustered;
            without one, the raw inputs are (the paper clusters a self-supervised embedding: give one).
        partitions: P, the number of k-means partitions.
        clusters: k, the centroids of each partition.
    """

    description = "CACTUs: N-way tasks from k-means partitions of a (self-supervised) embedding"
    paper = "Hsu, Levine & Finn, Unsupervised Learning via Meta-Learning, ICLR 2019"
    options = {
        "encoder": Option("a pretrain run (or .safetensors file) whose features are clustered; null: raw inputs"),
        "partitions": Option("P, the number of k-means partitions", ge=1),
        "clusters": Option("k, the centroids of each partition (between ways and the number of items)", ge=2),
    }

    def __init__(self, data: Dataset, spec: EpisodeSpec, tasks_per_step: int, world: int, seed: int,
                 features: torch.Tensor | None = None, encoder: str | None = None, partitions: int = 10,
                 clusters: int = 500) -> None:
        from selfmeta.encoders import to_unit
        from selfmeta.objectives.kmeans import kmeans

        if not spec.ways <= clusters <= len(data):
            raise SelfmetaError(f"cactus needs ways <= clusters <= items ({spec.ways} <= clusters <= {len(data)}); "
                                f"got clusters={clusters}")
        if features is None:
            features = to_unit(data.x).flatten(1).float()                                  # (M, F)
        g = torch.Generator().manual_seed(seed)
        labelings = []
        for p in range(partitions):
            scale = torch.rand(features.shape[1], generator=g) + 0.5 if p else torch.ones(features.shape[1])
            result = kmeans(features * scale, clusters, iters=20, seed=seed * 1000 + p)
            labelings.append(_drop_small(result.labels, spec.per_class))
        log.info("cactus: %d partitions of %d clusters on %s", partitions, clusters, encoder or "raw inputs")
        super().__init__(data, spec, tasks_per_step, world, seed, labelings)


def _drop_small(labels: torch.Tensor, minimum: int) -> torch.Tensor:
    """Cluster labels (M,) with the clusters of fewer than ``minimum`` items set to -1 (never sampled)."""
    counts = torch.bincount(labels)
    return torch.where(counts[labels] >= minimum, labels, torch.full_like(labels, -1))


def build_tasks(name: str, data: Dataset, spec: EpisodeSpec, tasks_per_step: int, world: int, seed: int,
                options: dict[str, Any], features: torch.Tensor | None = None) -> TaskConstructor:
    """The task constructor ``name`` with its (checked) options; ``features`` goes to those that cluster."""
    cls = TASKS.get(name)
    options = check_options(f"tasks {name!r}", cls, options, TASK_ARGS)
    extra = {"features": features} if features is not None else {}
    tasks = cls(data, spec, tasks_per_step, world, seed, **extra, **options)
    if not cls.uses_labels and data.y is not None:  # after the checks: an error stays one line
        log.warning("%s tasks are built without labels: the data's labels are ignored", name)
    return tasks
