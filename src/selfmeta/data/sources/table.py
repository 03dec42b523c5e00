"""CSV and Parquet tables: numeric feature columns and an optional label column.

The label column is the one named by ``label_column`` (``--label-column``), else one called ``label``,
``target`` or ``class`` if present. Any other non-numeric column is an error. Tables get the fixed
stratified 80/20 split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfmeta.data.dataset import Dataset, fixed_split, labels_from_names
from selfmeta.data.source import SOURCES, DataSource
from selfmeta.errors import SelfmetaError

DEFAULT_LABEL_COLUMNS = ("label", "target", "class")


def table_to_dataset(frame: Any, name: str, label_column: str | None) -> Dataset:
    """A pandas DataFrame -> Dataset of float32 rows (and labels if a label column is found)."""
    if label_column is not None and label_column not in frame.columns:
        raise SelfmetaError(f"{name}: no label column {label_column!r}; columns: {', '.join(map(str, frame.columns))}")
    if label_column is None:
        label_column = next((c for c in DEFAULT_LABEL_COLUMNS if c in frame.columns), None)
    y, classes = None, []
    if label_column is not None:
        labels = frame.pop(label_column)
        if labels.isna().any():
            raise SelfmetaError(f"{name}: the label column {label_column!r} has missing values")
        y, classes = labels_from_names([str(v) for v in labels])
    if frame.shape[1] == 0 or len(frame) == 0:
        raise SelfmetaError(f"{name}: the table has no feature columns or no rows")
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    # pandas' own dtypes (StringDtype, nullable Int64...) are not numpy dtypes: ask pandas, not np.issubdtype.
    non_numeric = [
        str(c) for c in frame.columns if not is_numeric_dtype(frame[c].dtype) or is_bool_dtype(frame[c].dtype)
    ]
    if non_numeric:
        raise SelfmetaError(
            f"{name}: non-numeric feature columns {', '.join(non_numeric)}; encode them or name the label column"
        )
    x = torch.from_numpy(frame.to_numpy(dtype=np.float32, na_value=np.nan))
    return Dataset(x, y, classes, "table", name)


class _Table(DataSource):
    suffix: str
    options = ("label_column",)
    catch_all = True  # any file with the suffix: formats with a closer look (a timestamped CSV) go first

    def detect(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == self.suffix

    def read(self, path: Path) -> Any:
        raise NotImplementedError

    def load(self, path: Path, split: str, label_column: str | None = None, **options: Any) -> Dataset:
        try:
            frame = self.read(path)
        except Exception as exc:  # pandas/pyarrow raise many types for malformed files
            raise SelfmetaError(f"{path}: cannot read as {self.name} ({type(exc).__name__}: {exc})".splitlines()[0]) from None
        return fixed_split(table_to_dataset(frame, path.stem, label_column), split)


@SOURCES.register("csv")
class CSV(_Table):
    name = "csv"
    description = "CSV table with a header: numeric features, optional label column (--label-column)"
    suffix = ".csv"

    def read(self, path: Path) -> Any:
        import pandas as pd

        return pd.read_csv(path)


@SOURCES.register("parquet")
class Parquet(_Table):
    name = "parquet"
    description = "Parquet table: numeric features, optional label column (--label-column)"
    suffix = ".parquet"

    def read(self, path: Path) -> Any:
        import pandas as pd

        return pd.read_parquet(path)
