"""Raw records: a table whose columns have kinds (number, category, text, image), before preprocessing.

A :class:`RecordTable` is the ``raw`` of a ``record`` Dataset (:mod:`selfmeta.data.dataset`): one array per
column, in the column plan's order, plus each column's kind. It is indexed like the object arrays of text
(``table[index]`` with an int array gives the rows at ``index``), so ``Dataset.subset`` and the fixed split
treat both alike. The ``record`` modality's preprocessor (:mod:`selfmeta.modalities.record`) turns it into the
items tensor.

Values per kind (a missing value is normal for records, never an error):
- ``number``: float64, NaN where missing;
- ``category``: ``str`` (the value as written), None where missing;
- ``text``: ``str``, None where missing;
- ``image``: the resolved location of the image file, None where missing: an absolute path, or
  ``"<absolute path of a .zip>::<member>"`` for an image inside a zip beside the table (``ZIP_MEMBER``). The
  source checks every location when it reads the table (it exists, it does not leave the table's folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from selfmeta.errors import SelfmetaError

KINDS = ("number", "category", "text", "image")
ZIP_MEMBER = "::"  # separates a zip file's path from the member's name in an image location


class RecordTable:
    """Columns of raw values (each an ``(N,)`` array) and their kinds, in plan order."""

    def __init__(self, columns: dict[str, np.ndarray], kinds: dict[str, str]) -> None:
        if list(columns) != list(kinds):
            raise SelfmetaError("a record table needs one kind per column, in the same order")
        bad = {n: k for n, k in kinds.items() if k not in KINDS}
        if bad:
            name, kind = next(iter(bad.items()))
            raise SelfmetaError(f"column {name!r}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise SelfmetaError(f"record columns of different lengths: {sorted(lengths)}")
        if not columns:
            raise SelfmetaError("a record table needs at least one column")
        self.columns = columns
        self.kinds = kinds

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, index: Any) -> "RecordTable":
        return RecordTable({n: v[index] for n, v in self.columns.items()}, dict(self.kinds))

    @property
    def plan(self) -> list[tuple[str, str]]:
        """(name, kind) of every column, in order: what a run remembers and checks again at evaluation."""
        return list(self.kinds.items())

    def missing(self, name: str) -> np.ndarray:
        """(N,) bool: where column ``name`` has no value."""
        values = self.columns[name]
        if self.kinds[name] == "number":
            return np.isnan(values.astype(np.float64))
        return np.array([v is None for v in values], dtype=bool)

    @staticmethod
    def concat(parts: Sequence["RecordTable"]) -> "RecordTable":
        """Tables with the same plan -> one, rows in order."""
        first = parts[0]
        if any(p.plan != first.plan for p in parts):
            raise SelfmetaError("record tables with different columns cannot be joined")
        return RecordTable({n: np.concatenate([p.columns[n] for p in parts]) for n in first.columns},
                           dict(first.kinds))
