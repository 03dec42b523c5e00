"""The in-memory dataset every data source produces, and the fixed train/test split.

Items live in one tensor in the layout of their modality (:mod:`selfmeta.modalities`): images as
``(N, C, H, W)`` ``uint8`` (or float in [0, 1]), tables as ``(N, D)`` ``float32``, series as ``(N, C, T)``
``float32`` with NaN for missing values and padding, text as ``(N, L)`` ``int64`` token ids. Code that trains
or embeds reaches them by index, ``take(index)``, never by slicing ``x``, so that a lazy source can later
serve batches without holding every item in memory.

A modality whose items need a fitted preprocessor (text: a tokenizer trained on the training split) gets
its items from the source as ``raw`` (an object array of documents) with ``x`` None; the engine fits the
preprocessor on the training split, or loads the run's, and ``prepared`` gives the Dataset with ``x``
(:mod:`selfmeta.modalities`). ``raw`` stays beside ``x``: topics read the words of the documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    x: torch.Tensor | None               # (N, *item_shape) in the modality's layout; None until prepared (raw)
    y: torch.Tensor | None = None        # (N,) int64 class indices into `classes`
    classes: list[str] = field(default_factory=list)
    modality: str = "image"              # a registered modality (selfmeta list)
    name: str = "data"
    raw: np.ndarray | None = None        # (N,) the source's items before a preprocessor (text: str documents)
    preprocessor: Any = None             # the modality's Preprocessor that made x from raw (text: the tokenizer)
    keys: np.ndarray | None = None       # (N,) str: what names each item where the source has it (users' IDs)
    # What the source knows of the things the items refer to, by ID (interactions: each item's "name" and
    # "categories", MovieLens's titles and genres); the preprocessor may learn from it (side information).
    info: dict[str, dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.x is None and self.raw is None:
            raise SelfmetaError(f"{self.name}: a Dataset needs items (x) or raw items")
        if (self.x is not None and self.x.ndim == 0) or len(self) == 0:
            raise SelfmetaError(f"{self.name}: the data is empty")
        if self.x is not None:
            self.spec.check(self.x, self.name)
        if self.raw is not None and self.x is not None and len(self.raw) != len(self.x):
            raise SelfmetaError(f"{self.name}: {len(self.x)} items but {len(self.raw)} raw items")
        if self.keys is not None and len(self.keys) != len(self):
            raise SelfmetaError(f"{self.name}: {len(self)} items but {len(self.keys)} keys")
        if self.y is not None:
            if self.y.shape != (len(self),):
                raise SelfmetaError(f"{self.name}: {len(self)} items but labels of shape {tuple(self.y.shape)}")
            if len(self.y) and (int(self.y.min()) < 0 or (self.classes and int(self.y.max()) >= len(self.classes))):
                raise SelfmetaError(f"{self.name}: labels must be class indices in [0, {len(self.classes)})")

    def __len__(self) -> int:
        return len(self.x) if self.x is not None else len(self.raw)

    @property
    def spec(self) -> Modality:
        """The modality of the items: validation, normalization, views, device transfer."""
        return get_modality(self.modality)

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """The raw items at ``index`` (B,) int64: (B, *item_shape), on the CPU."""
        return self.items[index]

    @property
    def items(self) -> torch.Tensor:
        """``x``; an error for raw items not yet prepared (a bug: the engine prepares them first)."""
        if self.x is None:
            raise SelfmetaError(f"{self.name}: {self.modality} items must be prepared by the run's "
                                f"{self.spec.preprocessor.kind} first (selfmeta.engine.model.prepare)")
        return self.x

    def as_input(self) -> np.ndarray:
        """The items as the Python API takes them: the raw documents for text, else the items array."""
        return self.raw if self.x is None else self.x.numpy()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one item: (C, H, W) for images, (D,) for tables, (C, T) for series, (L,) for text."""
        return tuple(self.items.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: torch.Tensor | np.ndarray) -> "Dataset":
        index = torch.as_tensor(index, dtype=torch.long)
        y = None if self.y is None else self.y[index]
        x = None if self.x is None else self.x[index]
        raw = None if self.raw is None else self.raw[index.numpy()]
        keys = None if self.keys is None else self.keys[index.numpy()]
        return Dataset(x, y, self.classes, self.modality, self.name, raw, self.preprocessor, keys, self.info)

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
