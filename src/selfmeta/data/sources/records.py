"""Record tables from the table sources: the column plan (``--columns``), kind inference, and the checks.

:mod:`selfmeta.data.sources.table` reads the file into a DataFrame (CSV and TSV with every value a string as
written, only an empty field missing; Parquet and JSON Lines with their own types); this module turns the
planned columns into a :class:`~selfmeta.data.records.RecordTable` (values per kind: :mod:`selfmeta.data.records`).

- The plan: ``--columns "Review Text:text,Age:number,Dept"``, repeatable (the values are joined with commas).
  The LAST colon of an entry separates the kind, so a name may hold spaces and colons (``a:b:auto``), never a
  comma; an entry without a colon, or with kind ``auto``, has its kind inferred (:func:`infer_kind`).
- ``number``: a present value must be a finite number (``inf``, ``nan`` and words are errors naming the row).
- ``category`` and ``text``: the value as written (a JSON or Parquet ``true`` is ``"true"``).
- ``image``: a path relative to the table's folder; absolute paths, paths that leave the folder (``..``, a
  symlink pointing out) and files that do not exist are errors naming the row. ``images.zip/cat/1.png``, whose
  first component is a zip in the table's folder, is the member ``cat/1.png`` of that zip, which must hold it.
  Images are not opened here (the ``record`` modality's preprocessor decodes them).
- An empty string is a missing value, like an empty field; a record with no value in any column is an error,
  and so is a column with no value at all.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from selfmeta.data.dataset import Dataset, labels_from_names
from selfmeta.data.records import KINDS, ZIP_MEMBER, RecordTable
from selfmeta.errors import SelfmetaError

AUTO = "auto"
COLUMN_KINDS = (*KINDS, AUTO)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
LONG_TEXT_CHARS = 30  # mean characters of a column's values from which it is text, not category
LONG_TEXT_WORDS = 5   # mean words (whitespace-separated) of a column's values from which it is text
DISTINCT_TEXT = 0.5   # short phrases are text when more than this fraction of them are distinct (titles)...
MIN_DISTINCT_TEXT = 20  # ...among at least this many present values

Plan = list[tuple[str, str]]


def parse_columns(spec: str | Sequence[str] | None) -> Plan | None:
    """The ``--columns`` option -> ``[(name, kind)]`` in the given order, kind ``"auto"`` where to infer it;
    None for None.

    ``spec`` is one string or a list of them (``--columns`` repeated), each ``NAME:KIND`` entries separated by
    commas. The last colon of an entry separates the kind (case-insensitive; number, category, text, image,
    auto); an entry with no colon is ``NAME:auto``. Names and kinds are stripped of surrounding spaces. An
    empty entry or name, an unknown kind or a name given twice is a SelfmetaError.
    """
    if spec is None:
        return None
    specs = [spec] if isinstance(spec, str) else [str(s) for s in spec]
    plan: Plan = []
    for entry in (e for s in specs for e in s.split(",")):
        text = entry.strip()
        if not text:
            raise SelfmetaError("--columns: an empty entry; give NAME:KIND entries separated by single commas")
        name, colon, kind = text.rpartition(":")
        if not colon:
            name, kind = text, AUTO
        name, kind = name.strip(), kind.strip().lower()
        if not name:
            raise SelfmetaError(f"--columns: no column name in {text!r}")
        if kind not in COLUMN_KINDS:
            raise SelfmetaError(f"--columns: unknown kind {kind!r} in {text!r}; valid: {', '.join(COLUMN_KINDS)} "
                                "(the kind follows the last colon: write 'a:b:auto' for a column named 'a:b')")
        plan.append((name, kind))
    if not plan:
        raise SelfmetaError("--columns names no column")
    names = [n for n, _ in plan]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SelfmetaError(f"--columns: {', '.join(map(repr, twice))} given twice")
    return plan


def _number(value: Any) -> float | None:
    """A cell as a number: ints and floats as they are, strings parsed (None where it is not one)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or "_" in value:  # float() takes "1_000"; a table does not
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def infer_kind(cells: Sequence[Any], name: str, where: str | Path, hint: str = "drop it from --columns") -> str:
    """The kind of a column from its present values (cells: None where missing, else a string as written or a
    number from a typed file), in this order:

    - ``number`` when every present value is a number (a number of a typed file, or a string that parses as
      one; ``true``/``false`` do not, so booleans are a category);
    - ``image`` when every present value, stripped and lowercased, ends in an image suffix (``IMAGE_SUFFIXES``:
      .png .jpg .jpeg .gif .bmp .webp .tif .tiff);
    - ``text`` when the values are long: their mean length is at least ``LONG_TEXT_CHARS`` (30) characters or
      their mean number of whitespace-separated words at least ``LONG_TEXT_WORDS`` (5); or when they are
      phrases that rarely repeat (titles): most hold a space and more than ``DISTINCT_TEXT`` (half) of the
      present values are distinct, among at least ``MIN_DISTINCT_TEXT`` (20) values;
    - else ``category``.

    A column with no present value is a SelfmetaError naming it (``hint`` says what to do).
    """
    present = [c for c in cells if c is not None]
    if not present:
        raise SelfmetaError(f"{where}: column {name!r} has no values; {hint}")
    if all(_number(c) is not None for c in present):
        return "number"
    strings = [c if isinstance(c, str) else str(c) for c in present]
    if all(s.strip().lower().endswith(IMAGE_SUFFIXES) for s in strings):
        return "image"
    chars = sum(len(s) for s in strings) / len(strings)
    words = sum(len(s.split()) for s in strings) / len(strings)
    if chars >= LONG_TEXT_CHARS or words >= LONG_TEXT_WORDS:
        return "text"
    phrases = sum(" " in s.strip() for s in strings) > len(strings) / 2
    distinct = len(set(strings)) > DISTINCT_TEXT * len(strings) and len(strings) >= MIN_DISTINCT_TEXT
    return "text" if phrases and distinct else "category"


def _cells(values: Any, name: str, where: str | Path) -> list[Any]:
    """A pandas column -> one cell a row: None where missing (or empty), else a ``str`` or a Python number.
    Booleans become ``"true"``/``"false"``, bytes are decoded as UTF-8, lists and objects of JSON Lines are
    written back as JSON."""
    absent = values.isna().to_numpy()
    cells: list[Any] = []
    for row, (value, skip) in enumerate(zip(values.tolist(), absent)):
        if skip:
            cells.append(None)
        elif isinstance(value, str):
            cells.append(value if value else None)
        elif isinstance(value, (bool, np.bool_)):
            cells.append("true" if value else "false")
        elif isinstance(value, (int, float)):
            cells.append(value)
        elif isinstance(value, bytes):
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise SelfmetaError(f"{where}, row {row + 1}: column {name!r} is not valid UTF-8") from None
            cells.append(text if text else None)
        elif isinstance(value, (list, dict)):
            cells.append(json.dumps(value, ensure_ascii=False))
        else:
            cells.append(str(value))
    return cells


def _is_number_dtype(values: Any) -> bool:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return is_numeric_dtype(values.dtype) and not is_bool_dtype(values.dtype)


def _numbers(values: Any, cells: list[Any] | None, name: str, where: str | Path) -> np.ndarray:
    """A number column -> float64, NaN where missing; a value that is not a finite number is an error."""
    if cells is None:  # a numeric column of a typed file (Parquet, JSON Lines)
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        infinite = np.isinf(numbers)
        if infinite.any():
            row = int(np.argmax(infinite))
            raise SelfmetaError(f"{where}, row {row + 1}: column {name!r} holds {numbers[row]}, not a finite number")
        return numbers
    numbers = np.full(len(cells), np.nan)
    for row, cell in enumerate(cells):
        if cell is None:
            continue
        number = _number(cell)
        if number is None:
            raise SelfmetaError(f"{where}, row {row + 1}: column {name!r} is a number column, and {cell!r} "
                                "is not a number")
        if not math.isfinite(number):
            raise SelfmetaError(f"{where}, row {row + 1}: column {name!r} holds {cell!r}, not a finite number "
                                "(leave the field empty for a missing value)")
        numbers[row] = number
    return numbers


def _objects(values: list[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


class _Images:
    """Resolves image paths relative to a table's folder, reading each zip's member list once."""

    def __init__(self, folder: Path) -> None:
        self.root = folder.resolve()
        self.members: dict[Path, set[str]] = {}

    def _names(self, archive: Path) -> set[str]:
        if archive not in self.members:
            try:
                with zipfile.ZipFile(archive) as handle:
                    self.members[archive] = set(handle.namelist())
            except (OSError, zipfile.BadZipFile) as exc:
                raise SelfmetaError(f"{archive}: cannot read as a zip of images ({exc})") from None
        return self.members[archive]

    def locate(self, value: str, row: int, name: str, where: str | Path) -> str:
        def refuse(why: str) -> SelfmetaError:
            return SelfmetaError(f"{where}, row {row + 1}: column {name!r}: image {value!r} {why}")

        text = value.strip()
        path = PurePosixPath(text)
        if path.is_absolute() or PureWindowsPath(text).drive or text.startswith("\\"):
            raise refuse(f"is an absolute path; give it relative to the table's folder {self.root}")
        if not path.parts:
            raise refuse("is not a path")
        first = path.parts[0]
        if first.lower().endswith(".zip") and (self.root / first).is_file():
            archive = (self.root / first).resolve()
            if not archive.is_relative_to(self.root):
                raise refuse("leaves the table's folder")
            member = "/".join(path.parts[1:])
            if not member:
                raise refuse(f"is a zip, not an image in it; write {first}/<member>")
            if ".." in path.parts[1:]:
                raise refuse("leaves the zip's folders")
            if member not in self._names(archive):
                raise refuse(f"is not in {first}")
            return f"{archive}{ZIP_MEMBER}{member}"
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root):
            raise refuse("leaves the table's folder")
        if not target.is_file():
            raise refuse("does not exist" if not target.exists() else "is not a file")
        return str(target)


def read_records(frame: Any, plan: Plan, where: str | Path, folder: Path, require_values: bool = True,
                 hint: str = "drop it from --columns") -> RecordTable:
    """The ``plan`` columns of a pandas DataFrame -> a RecordTable, ``auto`` kinds inferred (:func:`infer_kind`).

    ``folder`` is the table's folder, which image paths are relative to. ``require_values``: a column with no
    value is an error (as it always is for an ``auto`` column; False for a test file read with the training
    file's plan). A record with no value in any column is an error naming its 1-based row.
    """
    if len(frame) == 0:
        raise SelfmetaError(f"{where}: the table has no rows")
    images = None
    columns: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    for name, kind in plan:
        values = frame[name]
        typed_number = _is_number_dtype(values)
        cells = None if typed_number and kind in ("number", AUTO) else _cells(values, name, where)
        if cells is not None and (kind == AUTO or require_values) and all(c is None for c in cells):
            raise SelfmetaError(f"{where}: column {name!r} has no values; {hint}")
        if kind == AUTO:
            kind = "number" if typed_number else infer_kind(cells, name, where, hint)
        if kind == "number":
            column = _numbers(values, cells, name, where)
            if require_values and np.isnan(column).all():
                raise SelfmetaError(f"{where}: column {name!r} has no values; {hint}")
        elif kind == "image":
            images = images or _Images(folder)
            column = _objects([None if c is None else images.locate(str(c), row, name, where)
                               for row, c in enumerate(cells)])
        else:
            column = _objects([None if c is None else str(c) for c in cells])
        columns[name], kinds[name] = column, kind
    table = RecordTable(columns, kinds)
    empty = np.logical_and.reduce([table.missing(name) for name in columns])
    if empty.any():
        raise SelfmetaError(f"{where}, row {int(np.argmax(empty)) + 1}: the record has no value in any of its "
                            f"columns ({', '.join(columns)}); {int(empty.sum())} such rows")
    return table


def check_columns(frame: Any, plan: Plan, label_column: str | None, where: str | Path) -> None:
    """The columns of ``--columns`` are in the table, and the label column is not one of them."""
    names = [n for n, _ in plan]
    if label_column is not None and label_column in names:
        raise SelfmetaError(f"{where}: {label_column!r} is both the label column and one of --columns")
    absent = [n for n in names if n not in frame.columns]
    if absent:
        raise SelfmetaError(f"{where}: no column {', '.join(map(repr, absent))}; "
                            f"columns: {', '.join(map(str, frame.columns))}")


def record_dataset(table: RecordTable, labels: Sequence[str] | None, name: str,
                   classes: list[str] | None = None) -> Dataset:
    """A RecordTable (and its class names per row, or None) -> a ``record`` Dataset with ``x`` None."""
    y = None
    if labels is not None:
        y, classes = labels_from_names(list(labels), classes)
    return Dataset(None, y, classes or [], "record", name, raw=table)
