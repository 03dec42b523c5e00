"""The in-memory dataset every data source produces, and the fixed train/test split.

Items live in one tensor in the layout of their modality (:mod:`selfmeta.modalities`): images as
``(N, C, H, W)`` ``uint8`` (or float in [0, 1]), tables as ``(N, D)`` ``float32``, series as ``(N, C, T)``
``float32`` with NaN for missing values and padding. Code that trains or embeds reaches them by index,
``take(index)``, never by slicing ``x``, so that a lazy source can later serve batches without holding
every item in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np
import torch

from selfmeta.errors import SelfmetaError
from selfmeta.modalities import Modality, get_modality

# Every split name ``load_data`` knows. Most sources have train/test/all only; "val" is for sources with a
# fixed validation split of their own (omniglot), and the others refuse it (``DataSource.splits``).
SPLITS = ("train", "val", "test", "all")

# Sources without their own test split get this fixed, stratified one. Never tuned, never reshuffled.
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass
class Dataset:
    x: torch.Tensor                      # (N, *item_shape) in the modality's layout
    y: torch.Tensor | None = None        # (N,) int64 class indices into `classes`
    classes: list[str] = field(default_factory=list)
    modality: str = "image"              # a registered modality (selfmeta list)
    name: str = "data"

    def __post_init__(self) -> None:
        if self.x.ndim == 0 or len(self.x) == 0:
            raise SelfmetaError(f"{self.name}: the data is empty")
        self.spec.check(self.x, self.name)
        if self.y is not None:
            if self.y.shape != (len(self.x),):
                raise SelfmetaError(f"{self.name}: {len(self.x)} items but labels of shape {tuple(self.y.shape)}")
            if len(self.y) and (int(self.y.min()) < 0 or (self.classes and int(self.y.max()) >= len(self.classes))):
                raise SelfmetaError(f"{self.name}: labels must be class indices in [0, {len(self.classes)})")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def spec(self) -> Modality:
        """The modality of the items: validation, normalization, views, device transfer."""
        return get_modality(self.modality)

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """The raw items at ``index`` (B,) int64: (B, *item_shape), on the CPU."""
        return self.x[index]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one item: (C, H, W) for images, (D,) for tables, (C, T) for series."""
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: torch.Tensor | np.ndarray) -> "Dataset":
        index = torch.as_tensor(index, dtype=torch.long)
        y = None if self.y is None else self.y[index]
        return Dataset(self.x[index], y, self.classes, self.modality, self.name)

    def require_labels(self) -> torch.Tensor:
        if self.y is None:
            raise SelfmetaError(f"{self.name}: this needs labels, and the data has none")
        return self.y


def fixed_split(dataset: Dataset, split: str) -> Dataset:
    """The documented split for sources that have none: stratified, 20% test, seed 0."""
    if split not in ("train", "test", "all"):
        raise SelfmetaError(f"{dataset.name}: no {split!r} split here; valid: train, test, all")
    if split == "all":
        return dataset
    n = len(dataset)
    rng = np.random.default_rng(SPLIT_SEED)
    is_test = np.zeros(n, dtype=bool)
    if dataset.y is None:
        groups = [np.arange(n)]
    else:
        labels = dataset.y.numpy()
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for members in groups:
        members = rng.permutation(members)
        is_test[members[: int(round(len(members) * TEST_FRACTION))]] = True
    index = np.flatnonzero(is_test if split == "test" else ~is_test)
    if len(index) == 0:
        raise SelfmetaError(f"{dataset.name}: the {split} split is empty ({n} items in all)")
    return dataset.subset(index)


def _natural(name: str) -> tuple:
    """Sort key: numeric names by value (2 before 10), then the others alphabetically."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def labels_from_names(names: list[str], classes: list[str] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Class names per item -> (int64 labels, class names); ``classes`` defaults to the sorted names."""
    if classes is None:
        classes = sorted(set(names), key=_natural)
    lookup = {c: i for i, c in enumerate(classes)}
    return torch.tensor([lookup[s] for s in names], dtype=torch.long), classes
