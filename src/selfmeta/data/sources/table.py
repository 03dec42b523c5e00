"""Tables: CSV, TSV, Parquet and JSON Lines files, and a folder of ``train`` and ``test`` tables.

Each row is one item, of one of three kinds of table:

- numeric features (the ``table`` modality, ``x`` float32): without ``columns`` or ``text_column``, when every
  column but the label is numeric;
- records (the ``record`` modality, ``raw`` a :class:`~selfmeta.data.records.RecordTable`, ``x`` None): the
  columns named by ``columns`` (``--columns "Review Text:text,Age:number,Dept"``), in that order, the others
  ignored; or, without ``columns`` or ``text_column``, every column but the label when one is not numeric
  (its kinds inferred). Kinds, inference, missing values and image paths: :mod:`selfmeta.data.sources.records`.
  A folder of ``train``/``test`` tables infers the kinds on ``train`` and reads ``test`` with the same plan;
- documents (the ``text`` modality, :mod:`selfmeta.data.sources.text`), with ``text_column`` (one name or
  several): the named columns joined with a newline, missing values skipped, a row with none kept as the empty
  string so that items stay in step with the rows; the other columns are ignored. ``columns`` and
  ``text_column`` do not go together (name a text column ``NAME:text`` in ``columns``).

Text and record tables are read with every value as a string (CSV, TSV), so ``007`` or ``NA`` stays as written
(only an empty field is missing); Parquet and JSON Lines keep their types.

The label column is the one named by ``label_column`` (``--label-column``), else one called ``label``,
``target`` or ``class`` if present (and not a text column or one of ``columns``). A label column with a
missing value is an error.

- ``.csv``: a header row, comma-separated, with CSV quoting (a quoted field may hold newlines).
- ``.tsv``: a header row, tab-separated, no quoting: one line is one row (a ``.tsv`` of a label then numbers
  and no header is a UCR series file, :mod:`selfmeta.data.sources.series`).
- ``.parquet``: any column types; a text column may be strings or UTF-8 bytes.
- ``.jsonl``: one JSON object a line (blank lines skipped); the columns are the keys, a key a row lacks or
  ``null`` is a missing value.
- A folder holding ``train.<ext>`` and ``test.<ext>`` (one of the four): those are the train and test
  splits (``all`` is both), never reshuffled; the classes are those of both files, so the splits agree.
  A single file gets the fixed stratified 80/20 split.

CSV, TSV and JSON Lines must be UTF-8: an invalid byte is an error naming its line.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from selfmeta.data.dataset import Dataset, labels_from_names
from selfmeta.data.records import RecordTable
from selfmeta.data.sources.interactions import INTERACTION_OPTIONS, interactions_from_frame
from selfmeta.data.source import SOURCES, DataSource
from selfmeta.data.sources.records import AUTO, Plan, check_columns, parse_columns, read_records, record_dataset
from selfmeta.data.sources.text import (
    decode_utf8, documents_from_columns, read_bytes, split_of, text_columns, text_dataset,
)
from selfmeta.errors import SelfmetaError

DEFAULT_LABEL_COLUMNS = ("label", "target", "class")
INFERRED = "choose the columns to use with --columns"  # what to do about a column with no value, all inferred


def pop_labels(frame: Any, label_column: str | None, where: str | Path,
               exclude: Sequence[str] = ()) -> list[str] | None:
    """Remove the label column from ``frame`` and return its values as class names (None if there is none)."""
    if label_column is not None and label_column not in frame.columns:
        raise SelfmetaError(f"{where}: no label column {label_column!r}; columns: {', '.join(map(str, frame.columns))}")
    if label_column is not None and label_column in exclude:
        raise SelfmetaError(f"{where}: {label_column!r} is both the label column and a text column")
    if label_column is None:
        label_column = next((c for c in DEFAULT_LABEL_COLUMNS if c in frame.columns and c not in exclude), None)
    if label_column is None:
        return None
    labels = frame.pop(label_column)
    absent = labels.isna().to_numpy()
    if absent.any():
        raise SelfmetaError(f"{where}: the label column {label_column!r} has missing values "
                            f"({int(absent.sum())}, the first in row {int(np.argmax(absent)) + 1})")
    return [str(v) for v in labels.tolist()]


def non_numeric_columns(frame: Any) -> list[str]:
    """The columns of a DataFrame that are not numbers (booleans are not)."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    # pandas' own dtypes (StringDtype, nullable Int64...) are not numpy dtypes: ask pandas, not np.issubdtype.
    return [str(c) for c in frame.columns if not is_numeric_dtype(frame[c].dtype) or is_bool_dtype(frame[c].dtype)]


def numeric_dataset(frame: Any, labels: list[str] | None, name: str, where: str | Path,
                    classes: list[str] | None = None) -> Dataset:
    """A DataFrame of feature columns (label popped) -> Dataset of float32 rows."""
    if frame.shape[1] == 0 or len(frame) == 0:
        raise SelfmetaError(f"{where}: the table has no feature columns or no rows")
    non_numeric = non_numeric_columns(frame)
    if non_numeric:
        raise SelfmetaError(f"{where}: non-numeric feature columns {', '.join(non_numeric)}; encode them, "
                            "name the label column, or name text columns (--text-column)")
    y = None
    if labels is not None:
        y, classes = labels_from_names(labels, classes)
    x = torch.from_numpy(frame.to_numpy(dtype=np.float32, na_value=np.nan))
    return Dataset(x, y, classes or [], "table", name)


def table_plans(text_column: str | Sequence[str] | None,
                columns: str | Sequence[str] | None) -> tuple[list[str] | None, Plan | None]:
    """The ``text_column`` and ``columns`` options -> (text column names, column plan), at most one not None."""
    texts, plan = text_columns(text_column), parse_columns(columns)
    if texts is not None and plan is not None:
        raise SelfmetaError("--columns and --text-column do not go together; "
                            "name a text column in --columns as NAME:text")
    return texts, plan


def table_to_dataset(frame: Any, name: str, label_column: str | None = None, text_column: Sequence[str] | None = None,
                     where: str | Path | None = None, classes: list[str] | None = None,
                     columns: str | Sequence[str] | None = None, folder: str | Path | None = None,
                     reread: Callable[[], Any] | None = None) -> Dataset:
    """A pandas DataFrame -> Dataset (labels if a label column is found): documents from ``text_column``, records
    of the ``columns`` plan, numeric rows when every other column is numeric, else records of every other column.

    ``where`` names the file in errors (default ``name``); ``folder`` is where image paths are relative to
    (default: the current folder); ``reread`` gives the table again with every value a string as written, for
    records found in a frame read with types (a CSV file)."""
    where = name if where is None else where
    folder = Path("." if folder is None else folder)
    texts, plan = table_plans(text_column, columns)
    if texts is not None:
        documents = documents_from_columns(frame, texts, where)  # first: a missing text column lists every column
        return text_dataset(documents, pop_labels(frame, label_column, where, texts), name, where, classes)
    if plan is not None:
        check_columns(frame, plan, label_column, where)
        labels = pop_labels(frame, label_column, where, [n for n, _ in plan])
        return record_dataset(read_records(frame, plan, where, folder), labels, name, classes)
    labels = pop_labels(frame, label_column, where)
    if frame.shape[1] == 0 or not non_numeric_columns(frame):
        return numeric_dataset(frame, labels, name, where, classes)
    if reread is not None:
        frame = reread()
        labels = pop_labels(frame, label_column, where)
    frame = frame.rename(columns=str)
    plan = [(c, AUTO) for c in frame.columns]
    return record_dataset(read_records(frame, plan, where, folder, hint=INFERRED), labels, name, classes)


def _read_jsonl(data: bytes, path: Path) -> Any:
    import pandas as pd

    records = []
    for number, line in enumerate(io.BytesIO(data), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SelfmetaError(f"{path}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise SelfmetaError(f"{path}, line {number}: expected one JSON object a line, "
                                f"found {type(record).__name__}")
        records.append(record)
    if not records:
        raise SelfmetaError(f"{path}: no rows")
    return pd.DataFrame.from_records(records)


class _Table(DataSource):
    suffix: str
    options = ("label_column", "text_column", "columns", *INTERACTION_OPTIONS)
    splits = ("train", "val", "test", "all")  # val: interaction logs' leave-one-out (fixed_split refuses it)
    catch_all = True  # any file with the suffix: formats with a closer look (a timestamped CSV) go first

    def detect(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == self.suffix

    typed_only = False  # read() keeps the file's types whatever ``text`` says (Parquet, JSON Lines)

    def read(self, path: Path, text: bool) -> Any:
        """The file as a DataFrame; ``text``: every value a string (only an empty field missing)."""
        raise NotImplementedError

    def frame(self, path: Path, text: bool) -> Any:
        try:
            return self.read(path, text)
        except SelfmetaError:
            raise
        except Exception as exc:  # pandas/pyarrow raise many types for malformed files
            message = f"{path}: cannot read as {self.name} ({type(exc).__name__}: {exc})"
            raise SelfmetaError(message.splitlines()[0]) from None

    def load(self, path: Path, split: str, label_column: str | None = None,
             text_column: str | Sequence[str] | None = None, columns: str | Sequence[str] | None = None,
             **options: Any) -> Dataset:
        interaction = {k: v for k, v in options.items() if k in INTERACTION_OPTIONS and v is not None}
        if interaction:  # an interaction log: users' items in time order (selfmeta.data.sources.interactions)
            if label_column is not None or text_column is not None or columns is not None:
                raise SelfmetaError("--user-column, --item-column and --time-column read an interaction log; "
                                    "--label-column, --text-column and --columns do not apply to it")
            # every value as written: IDs "007" and "7" are two users (times and ratings are parsed apart)
            return interactions_from_frame(self.frame(path, True), path, path.stem, split, **interaction)
        as_text = text_column is not None or columns is not None
        reread = None if self.typed_only else (lambda: self.frame(path, True))
        dataset = table_to_dataset(self.frame(path, as_text), path.stem, label_column, text_column, path,
                                   columns=columns, folder=path.parent, reread=reread)
        return split_of(dataset, split, path)


# read_csv keywords for text tables: strings as written, only an empty field missing.
_AS_TEXT = {"dtype": str, "keep_default_na": False, "na_values": [""]}


@SOURCES.register("csv")
class CSV(_Table):
    name = "csv"
    description = "CSV table with a header: numeric features or --text-column, optional label column (--label-column)"
    suffix = ".csv"

    def read(self, path: Path, text: bool) -> Any:
        import pandas as pd

        data = read_bytes(path)
        decode_utf8(data, path)
        return pd.read_csv(io.BytesIO(data), **(_AS_TEXT if text else {}))


@SOURCES.register("tsv")
class TSV(_Table):
    name = "tsv"
    description = "tab-separated table with a header: numeric features or --text-column, optional --label-column"
    suffix = ".tsv"

    def read(self, path: Path, text: bool) -> Any:
        import pandas as pd

        data = read_bytes(path)
        decode_utf8(data, path)
        return pd.read_csv(io.BytesIO(data), sep="\t", quoting=csv.QUOTE_NONE, **(_AS_TEXT if text else {}))


@SOURCES.register("jsonl")
class JSONLines(_Table):
    name = "jsonl"
    description = "JSON Lines, one object a row: numeric features or --text-column, optional --label-column"
    suffix = ".jsonl"
    typed_only = True

    def read(self, path: Path, text: bool) -> Any:
        data = read_bytes(path)
        decode_utf8(data, path)
        return _read_jsonl(data, path)


@SOURCES.register("parquet")
class Parquet(_Table):
    name = "parquet"
    description = "Parquet table: numeric features or --text-column, optional label column (--label-column)"
    suffix = ".parquet"
    typed_only = True

    def read(self, path: Path, text: bool) -> Any:
        import pandas as pd

        return pd.read_parquet(path)


TABLES = {cls.suffix: cls for cls in (CSV, TSV, JSONLines, Parquet)}


def _split_tables(folder: Path) -> list[str]:
    """The suffixes for which ``folder`` holds both ``train<suffix>`` and ``test<suffix>``."""
    return [s for s in TABLES if (folder / f"train{s}").is_file() and (folder / f"test{s}").is_file()]


@SOURCES.register("tablefolder")
class TableFolder(DataSource):
    name = "tablefolder"
    description = "a folder with train.<ext> and test.<ext> tables (csv, tsv, parquet, jsonl) as its train/test splits"
    options = ("label_column", "text_column", "columns")

    def detect(self, path: Path) -> bool:
        return path.is_dir() and bool(_split_tables(path))

    def load(self, path: Path, split: str, label_column: str | None = None,
             text_column: str | Sequence[str] | None = None, columns: str | Sequence[str] | None = None,
             **options: Any) -> Dataset:
        suffixes = _split_tables(path)
        if len(suffixes) != 1:
            raise SelfmetaError(f"{path}: expected one train.<ext> and test.<ext> pair ({', '.join(TABLES)}), found "
                                + (" and ".join(f"train{s}/test{s}" for s in suffixes) or "none"))
        source, (texts, plan) = TABLES[suffixes[0]](), table_plans(text_column, columns)
        files = {s: path / f"{s}{suffixes[0]}" for s in ("train", "test")}
        frames = {s: source.frame(f, texts is not None or plan is not None) for s, f in files.items()}
        documents = {s: documents_from_columns(frames[s], texts, files[s]) for s in files} if texts else {}
        for s in files if plan is not None else ():
            check_columns(frames[s], plan, label_column, files[s])
        exclude = texts or [n for n, _ in plan or ()]
        labels = {s: pop_labels(frames[s], label_column, files[s], exclude) for s in files}
        if (labels["train"] is None) != (labels["test"] is None):
            raise SelfmetaError(f"{path}: one of train{suffixes[0]} and test{suffixes[0]} has a label column, "
                                "the other not; name it with --label-column")
        hint = "drop it from --columns"
        if texts is None and plan is None:
            if list(frames["train"].columns) != list(frames["test"].columns):
                raise SelfmetaError(f"{path}: train{suffixes[0]} and test{suffixes[0]} have different feature "
                                    f"columns ({', '.join(map(str, frames['train'].columns))} / "
                                    f"{', '.join(map(str, frames['test'].columns))})")
            if frames["train"].shape[1] and any(non_numeric_columns(frames[s]) for s in files):
                if not source.typed_only:  # records: read again with every value a string as written
                    frames = {s: source.frame(f, True) for s, f in files.items()}
                    labels = {s: pop_labels(frames[s], label_column, files[s]) for s in files}
                frames = {s: frame.rename(columns=str) for s, frame in frames.items()}
                plan, hint = [(c, AUTO) for c in frames["train"].columns], INFERRED
        # Class indices from both files, so that train and test agree.
        classes = None if labels["train"] is None else labels_from_names(labels["train"] + labels["test"])[1]
        tables: dict[str, RecordTable] = {}
        if plan is not None:  # the kinds inferred on train, and test read with the same plan
            tables["train"] = read_records(frames["train"], plan, files["train"], path, hint=hint)
            tables["test"] = read_records(frames["test"], tables["train"].plan, files["test"], path,
                                          require_values=False)
        parts = []
        for s in ("train", "test") if split == "all" else (split,):
            if texts is not None:
                parts.append(text_dataset(documents[s], labels[s], path.name, files[s], classes))
            elif plan is not None:
                parts.append(record_dataset(tables[s], labels[s], path.name, classes))
            else:
                parts.append(numeric_dataset(frames[s], labels[s], path.name, files[s], classes))
        return parts[0] if len(parts) == 1 else _concat(parts)


def _concat(parts: list[Dataset]) -> Dataset:
    """Datasets of one kind and the same classes -> one, in order."""
    first = parts[0]
    x = None if first.x is None else torch.cat([p.x for p in parts])
    y = None if first.y is None else torch.cat([p.y for p in parts])
    if first.raw is None:
        raw = None
    elif isinstance(first.raw, RecordTable):
        raw = RecordTable.concat([p.raw for p in parts])
    else:
        raw = np.concatenate([p.raw for p in parts])
    return Dataset(x, y, first.classes, first.modality, first.name, raw)
