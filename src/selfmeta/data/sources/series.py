"""Time-series sources: the sktime/aeon ``.ts`` format, the UCR 2018 archive's ``.tsv``, a folder holding one
problem's ``<Name>_TRAIN`` and ``<Name>_TEST`` files, and a CSV of one long series cut into windows.

Every source gives ``(N, C, T)`` float32 series (the ``series`` modality); a series shorter than the
longest is padded with NaN at its end, and ``?`` (``.ts``) or ``NaN`` (``.tsv``) is a missing value.

- ``.ts`` (Bagnall et al., the UEA/UCR archive as aeon reads it): ``#`` comment lines, ``@`` header lines
  (``@problemName``, ``@univariate``, ``@dimensions``, ``@equalLength``, ``@classLabel true 1 2 3``...),
  then ``@data`` and one series a line: the values of each dimension comma-separated, ``:`` between
  dimensions, the class label last (when ``@classLabel true``).
- ``.tsv`` (Dau et al., the UCR 2018 archive): one series a line, the label first, values tab-separated.
- A folder with ``<Name>_TRAIN.ts`` and ``<Name>_TEST.ts`` (or ``.tsv``) is one problem with its own
  train and test splits, never reshuffled; the classes are those of both files. A single file gets the
  fixed stratified 80/20 split.
- A CSV whose first column is ``timestamp`` (NAB's files: ``timestamp,value[,value2...]``) is one long
  multichannel series, cut into windows of ``--window`` steps every ``--stride`` steps (unlabeled: for
  pretraining on long recordings). Its windows are split 80/20 in time order (the test split is the end).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfmeta.data.dataset import Dataset, fixed_split, labels_from_names
from selfmeta.data.source import SOURCES, DataSource
from selfmeta.errors import SelfmetaError

SPLIT_SUFFIXES = {"train": "_TRAIN", "test": "_TEST"}
SERIES_SUFFIXES = (".ts", ".tsv")
# Bounds on what a small file can make the reader allocate: padding unequal lengths may not multiply the
# values read by more than MAX_PADDING (JapaneseVowels pads 2x), and windows of a long series may not hold
# more than MAX_WINDOW_VALUES values (a stride of 1 copies each value window times).
MAX_PADDING = 16
MAX_WINDOW_VALUES = 2**30


def _number(text: str, where: str) -> float:
    text = text.strip()
    if text in ("?", "NaN", "nan", ""):
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise SelfmetaError(f"{where}: {text[:40]!r} is not a number") from None
    if math.isinf(value):
        raise SelfmetaError(f"{where}: an infinite value ({text})")
    return value


def pad(series: list[np.ndarray], name: str) -> torch.Tensor:
    """Series of shape (C, T_i) -> (N, C, max T_i) float32, NaN after each one's end."""
    if not series:
        raise SelfmetaError(f"{name}: no series")
    length = max(s.shape[1] for s in series)
    values = sum(s.size for s in series)
    if len(series) * series[0].shape[0] * length > MAX_PADDING * values + 2**20:
        raise SelfmetaError(f"{name}: lengths from {min(s.shape[1] for s in series)} to {length} steps: padding them "
                            f"to one length would take more than {MAX_PADDING} times the values; split the file")
    out = np.full((len(series), series[0].shape[0], length), np.nan, dtype=np.float32)
    for i, s in enumerate(series):
        out[i, :, : s.shape[1]] = s
    return torch.from_numpy(out)


def read_ts(path: Path) -> tuple[torch.Tensor, list[str] | None, list[str] | None]:
    """A ``.ts`` file -> (series (N, C, T) float32, per-item labels or None, declared class labels or None)."""
    header: dict[str, str] = {}
    series: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    try:
        handle = open(path, encoding="utf-8", errors="strict")
        with handle:
            for number, raw in enumerate(handle, 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                where = f"{path}, line {number}"
                if not in_data:
                    if not line.startswith("@"):
                        raise SelfmetaError(f"{where}: expected an @ header line or @data before the series")
                    key, _, value = line[1:].partition(" ")
                    key = key.lower()
                    if key == "data":
                        in_data = True
                    else:
                        header[key] = value.strip()
                    continue
                has_label = header.get("classlabel", "false").split(" ")[0].lower() == "true"
                fields = line.split(":")
                if has_label:
                    labels.append(fields.pop().strip())
                dims = [[_number(v, where) for v in f.split(",")] for f in fields]
                if series and len(dims) != series[0].shape[0]:
                    raise SelfmetaError(f"{where}: {len(dims)} dimensions, but the first series has {series[0].shape[0]}")
                if len({len(d) for d in dims}) > 1:
                    raise SelfmetaError(f"{where}: the dimensions of one series differ in length "
                                        f"({', '.join(str(len(d)) for d in dims)})")
                series.append(np.asarray(dims, dtype=np.float32))
    except UnicodeDecodeError as exc:
        raise SelfmetaError(f"{path}: not a text file ({exc})") from None
    except OSError as exc:
        raise SelfmetaError(f"cannot read {path} ({exc})") from None
    if not in_data:
        raise SelfmetaError(f"{path}: no @data line; not a .ts file")
    declared = header.get("dimensions")
    if declared is not None and series and declared.isdigit() and int(declared) != series[0].shape[0]:
        raise SelfmetaError(f"{path}: @dimensions {declared}, but the series have {series[0].shape[0]}")
    classes = None
    parts = header.get("classlabel", "false").split()
    if parts and parts[0].lower() == "true":
        classes = parts[1:]
        unknown = sorted(set(labels) - set(classes)) if classes else []
        if unknown:
            raise SelfmetaError(f"{path}: label {unknown[0]!r} is not declared in @classLabel ({' '.join(classes)})")
    return pad(series, str(path)), (labels or None), classes


def read_tsv(path: Path) -> tuple[torch.Tensor, list[str] | None, list[str] | None]:
    """A UCR 2018 ``.tsv`` file -> (series (N, 1, T), labels, None). Trailing NaN are padding."""
    series, labels = [], []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, raw in enumerate(handle, 1):
                line = raw.rstrip("\n\r")
                if not line.strip():
                    continue
                where = f"{path}, line {number}"
                fields = line.split("\t")
                if len(fields) < 2:
                    raise SelfmetaError(f"{where}: expected a label and values separated by tabs")
                labels.append(fields[0].strip())
                values = np.asarray([_number(v, where) for v in fields[1:]], dtype=np.float32)
                present = np.flatnonzero(~np.isnan(values))
                series.append(values[: present[-1] + 1 if len(present) else 0][None])
    except UnicodeDecodeError as exc:
        raise SelfmetaError(f"{path}: not a text file ({exc})") from None
    except OSError as exc:
        raise SelfmetaError(f"cannot read {path} ({exc})") from None
    return pad(series, str(path)), labels, None


READERS = {".ts": read_ts, ".tsv": read_tsv}


def _dataset(parts: list[tuple[torch.Tensor, list[str] | None, list[str] | None]], name: str,
             classes: list[str] | None = None, length: int | None = None) -> Dataset:
    """Series files (read by READERS) -> one Dataset, padded to ``length`` (default: the longest)."""
    length = length or max(x.shape[-1] for x, _, _ in parts)
    channels = {x.shape[1] for x, _, _ in parts}
    if len(channels) > 1:
        raise SelfmetaError(f"{name}: the files have different numbers of dimensions ({sorted(channels)})")
    x = torch.cat([torch.nn.functional.pad(x, (0, length - x.shape[-1]), value=math.nan) for x, _, _ in parts])
    labels = [label for _, ls, _ in parts for label in (ls or [])]
    y = None
    if labels and len(labels) == len(x):
        y, classes = labels_from_names(labels, classes)
    elif labels:
        raise SelfmetaError(f"{name}: some files have labels and others do not")
    return Dataset(x, y, classes or [], "series", name)


def _problem_files(folder: Path) -> dict[str, Path]:
    """``{"train": <Name>_TRAIN.ts, "test": <Name>_TEST.ts}`` in a problem folder (``.ts`` or ``.tsv``)."""
    found = {}
    for split, suffix in SPLIT_SUFFIXES.items():
        matches = sorted(p for p in folder.iterdir() if p.suffix in SERIES_SUFFIXES and p.stem.endswith(suffix))
        if len(matches) > 1:
            raise SelfmetaError(f"{folder}: several {suffix} files ({', '.join(p.name for p in matches)})")
        if matches:
            found[split] = matches[0]
    return found


@SOURCES.register("ucr")
class UCRProblem(DataSource):
    name = "ucr"
    description = "a time-series problem folder: <Name>_TRAIN and <Name>_TEST in .ts (aeon) or .tsv (UCR 2018)"

    def detect(self, path: Path) -> bool:
        return path.is_dir() and "train" in _problem_files(path)

    def load(self, path: Path, split: str, **options: Any) -> Dataset:
        files = _problem_files(path)
        if "train" not in files or (split in ("test", "all") and "test" not in files):
            raise SelfmetaError(f"{path}: needs <Name>_TRAIN and <Name>_TEST files (.ts or .tsv) for the {split} split")
        read = {s: READERS[f.suffix](f) for s, f in files.items()}
        # Class indices from both files, so that train and test agree: declared labels first, then any others.
        declared = next((c for _, _, c in read.values() if c), None)
        seen = [label for _, labels, _ in read.values() for label in (labels or [])]
        classes = labels_from_names(seen, None)[1] if declared is None else declared + sorted(set(seen) - set(declared))
        parts = [read["train"], read["test"]] if split == "all" else [read[split]]
        # Every split padded to the longest series of the problem, so that train and test items have one shape.
        length = max(x.shape[-1] for x, _, _ in read.values())
        return _dataset(parts, path.name, classes if seen else None, length)


def is_ucr_tsv(path: Path) -> bool:
    """A ``.tsv`` in the UCR 2018 layout: no header, the first line a label then tab-separated numbers (``NaN``
    for missing). A ``.tsv`` whose first line is a header row is a table (:mod:`selfmeta.data.sources.table`)."""
    if not (path.is_file() and path.suffix == ".tsv"):
        return False
    limit = 2**20  # of the first line: enough to judge (a cut last value is dropped)
    try:
        with open(path, "rb") as handle:
            first = b""
            for _ in range(8):  # past a few blank lines
                first = handle.readline(limit)
                if first.strip() or not first:
                    break
    except OSError:
        return False
    fields = first.decode("utf-8", errors="replace").rstrip("\r\n").split("\t")[1:]
    if len(first) == limit:
        fields = fields[:-1]
    values = [f.strip() for f in fields]
    try:
        numbers = [float(v) for v in values if v not in ("?", "")]
    except ValueError:
        return False
    return any(not math.isnan(n) for n in numbers)


@SOURCES.register("ts")
class SeriesFile(DataSource):
    name = "ts"
    description = "one file of series: .ts (sktime/aeon format) or .tsv (UCR 2018); fixed 80/20 split"

    def detect(self, path: Path) -> bool:
        return path.is_file() and (path.suffix == ".ts" or is_ucr_tsv(path))

    def load(self, path: Path, split: str, **options: Any) -> Dataset:
        if path.suffix not in READERS:
            raise SelfmetaError(f"{path}: a series file ends in .ts or .tsv")
        x, labels, classes = READERS[path.suffix](path)
        return fixed_split(_dataset([(x, labels, classes)], path.stem, classes), split)


def is_timestamped_csv(path: Path) -> bool:
    """A .csv whose header's first column is ``timestamp``: one long series (NAB's layout)."""
    if not (path.is_file() and path.suffix.lower() == ".csv"):
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline(4096)
    except OSError:
        return False
    return first.split(",")[0].strip().strip('"').lower() == "timestamp"


def read_timestamped(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A CSV of one long series, ``timestamp,value[,value2...]`` -> (timestamps (L,) datetime64[ns], values
    (L, C) float64). The timestamps must be strictly increasing (a series scored online has one order); a
    value that is not a number, an unreadable timestamp or a ragged row is one SelfmetaError line."""
    rows: list[list[float]] = []
    stamps: list[str] = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            if len(header) < 2:
                raise SelfmetaError(f"{path}: expected timestamp,value[,value2...] columns")
            for number, row in enumerate(reader, 2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise SelfmetaError(f"{path}, line {number}: {len(row)} fields, the header has {len(header)}")
                stamps.append(row[0])
                rows.append([_number(v, f"{path}, line {number}") for v in row[1:]])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SelfmetaError(f"{path}: not a readable CSV ({exc})".splitlines()[0]) from None
    except OSError as exc:
        raise SelfmetaError(f"cannot read {path} ({exc})") from None
    if not rows:
        raise SelfmetaError(f"{path}: no rows")
    try:
        times = np.array(stamps, dtype="datetime64[ns]")
    except ValueError:
        bad = next(i for i, t in enumerate(stamps) if not _is_time(t))
        raise SelfmetaError(f"{path}, line {bad + 2}: {stamps[bad][:40]!r} is not a timestamp") from None
    steps = np.diff(times)
    if (steps <= np.timedelta64(0)).any():
        i = int(np.flatnonzero(steps <= np.timedelta64(0))[0]) + 1
        what = "repeats" if steps[i - 1] == np.timedelta64(0) else "comes before"
        raise SelfmetaError(f"{path}, line {i + 2}: timestamp {stamps[i]} {what} the previous row's ({stamps[i - 1]}); "
                            "rows must be in time order without duplicates")
    return times, np.asarray(rows, dtype=np.float64)


def series_dataset(items: np.ndarray, name: str) -> Dataset:
    """(N, C, T) values -> an unlabeled Dataset of series items: what a series model is checked against
    (``check_compatible``) before it scores one long series or its windows."""
    return Dataset(torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32)), None, [], "series", name)


def _is_time(text: str) -> bool:
    try:
        np.datetime64(text, "ns")
        return True
    except ValueError:
        return False


def windows(values: torch.Tensor, window: int, stride: int, name: str) -> torch.Tensor:
    """One series (C, L) -> (N, C, window) windows starting every ``stride`` steps (a strided view, copied)."""
    length = values.shape[-1]
    if window > length:
        raise SelfmetaError(f"{name}: --window {window} is longer than the series ({length} steps)")
    count = (length - window) // stride + 1
    if count * window * values.shape[0] > MAX_WINDOW_VALUES:
        raise SelfmetaError(f"{name}: {count} windows of {window} steps would hold {count * window * values.shape[0]:,} "
                            "values; raise --stride")
    return values.unfold(-1, window, stride).permute(1, 0, 2).contiguous()                 # (N, C, window)


@SOURCES.register("windows")
class TimestampedCSV(DataSource):
    name = "windows"
    description = "a CSV of one long series (timestamp,value[,value2...], as NAB) cut into --window steps every --stride"
    options = ("window", "stride")

    def detect(self, path: Path) -> bool:
        return is_timestamped_csv(path)

    def load(self, path: Path, split: str, window: int | None = None, stride: int | None = None,
             **options: Any) -> Dataset:
        if window is None:
            raise SelfmetaError(f"{path}: one long series: give --window (steps per item) and optionally --stride")
        stride = stride or window
        if window < 2 or stride < 1:
            raise SelfmetaError(f"--window must be at least 2 and --stride at least 1, got {window} and {stride}")
        _, rows = read_timestamped(path)
        values = torch.from_numpy(rows.T.astype(np.float32))                                   # (C, L)
        items = windows(values, window, stride, str(path))
        n_test = int(round(len(items) * 0.2))
        parts = {"train": items[: len(items) - n_test], "test": items[len(items) - n_test :], "all": items}
        if len(parts[split]) == 0:
            raise SelfmetaError(f"{path}: the {split} split holds no window ({len(items)} windows in all)")
        return Dataset(parts[split], None, [], "series", path.stem)
