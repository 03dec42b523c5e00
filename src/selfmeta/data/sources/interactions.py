"""Interaction logs: who interacted with what, and when -> each user's items in time order.

Two ways in:
- MovieLens folders in GroupLens's official layout: ``ml-100k`` (``u.data``: user, item, rating, unix time,
  tab-separated; ``u.item`` and ``u.genre`` give each movie's title and genres, ``Dataset.info``) and
  ``ml-1m`` (``ratings.dat``, ``::``-separated; ``movies.dat``); the folder itself or one that holds it;
- any table the table sources read (CSV, TSV, Parquet, JSON Lines) with ``--user-column``, ``--item-column``
  and ``--time-column`` (all three named, since guessing them wrong would train on nonsense), optionally
  ``--rating-column`` with ``--min-rating`` for implicit feedback from ratings (a row counts from that rating).
  Times are numbers (seconds or any numeric clock) or ISO 8601 dates; nothing else is guessed.

Each user's interactions are ordered by time; ties keep the file's order (a stable sort: MovieLens holds many
ratings within the same second). Users with fewer than 3 interactions cannot give a history, a validation
and a test item, and are dropped, with their count said aloud.

Splits, fixed (leave-one-out, as SASRec, BERT4Rec and RecBole score): ``test`` rows are each user's whole
sequence (the last item is the target), ``val`` rows end one item earlier, ``train`` rows two earlier, so
no validation or test target is ever in the training rows; ``all`` is the test rows.

Cold-start users: a fixed fifth of the users, chosen by a hash of their ID (stable across runs, machines and
data growth), held out whole: ``users=cold`` (half of them, for testing) and ``users=coldval`` (the other half,
for choosing settings); ``users=warm`` is the other four fifths. Training on warm users and scoring cold ones
never shares a user.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from selfmeta.data.dataset import Dataset
from selfmeta.data.source import SOURCES, DataSource
from selfmeta.data.sources.text import read_bytes
from selfmeta.errors import SelfmetaError

log = logging.getLogger(__name__)

MIN_INTERACTIONS = 3      # a history item, the validation target and the test target
COLD_FRACTION = 20        # percent of users held out as cold-start users (by a hash of the ID)
USER_SETS = ("all", "warm", "cold", "coldval")
# How far each split's rows end before a user's last item (leave-one-out).
SPLIT_END = {"train": 2, "val": 1, "test": 0, "all": 0}
INTERACTION_OPTIONS = ("user_column", "item_column", "time_column", "rating_column", "min_rating", "users")


def user_sets(users: np.ndarray) -> np.ndarray:
    """(N,) user IDs -> (N,) "cold", "coldval" or "warm": the fixed cold-start users (a tenth for testing, a
    tenth for choosing settings) by the first byte of the MD5 of the ID, the others warm."""
    digest = np.fromiter((hashlib.md5(str(u).encode()).digest()[0] for u in users), dtype=np.int64, count=len(users))
    share = digest * 100 / 256
    return np.where(share < COLD_FRACTION / 2, "cold", np.where(share < COLD_FRACTION, "coldval", "warm"))


def sequences_from_log(users: np.ndarray, items: np.ndarray, times: np.ndarray, where: str | Path,
                       name: str) -> Dataset:
    """One row per interaction -> an interactions Dataset of every user's items in time order (``raw``), the
    users' IDs as ``keys``, users with fewer than 3 interactions dropped (said aloud)."""
    users, items = np.asarray(users).astype(str), np.asarray(items).astype(str)
    order = np.lexsort((np.arange(len(users)), times, users))      # by user, then time, then file order
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    keep = ends - starts >= MIN_INTERACTIONS
    if (~keep).any():
        log.warning("%s: %d of %d users have fewer than %d interactions and are dropped", where, int((~keep).sum()),
                    len(keep), MIN_INTERACTIONS)
    if not keep.any():
        raise SelfmetaError(f"{where}: no user has {MIN_INTERACTIONS} or more interactions")
    raw = np.empty(int(keep.sum()), dtype=object)
    raw[:] = [items[s:e] for s, e in zip(starts[keep], ends[keep])]
    return Dataset(None, None, [], "interactions", name, raw, None, users[starts[keep]])


def leave_one_out(data: Dataset, split: str, users: str = "all", where: str | Path = "") -> Dataset:
    """The fixed split of a Dataset of whole sequences: rows cut ``SPLIT_END[split]`` items before each user's
    last, of the users in ``users`` (all, warm, cold)."""
    if split not in SPLIT_END:
        raise SelfmetaError(f"{where}: no {split!r} split; valid: {', '.join(SPLIT_END)}")
    if users not in USER_SETS:
        raise SelfmetaError(f"--users must be one of {', '.join(USER_SETS)}, got {users!r}")
    if users != "all":
        chosen = np.flatnonzero(user_sets(data.keys) == users)
        if len(chosen) == 0:
            raise SelfmetaError(f"{where}: no {users} user among the {len(data)} users")
        data = data.subset(chosen)
    cut = SPLIT_END[split]
    raw = np.empty(len(data), dtype=object)
    raw[:] = [s[: len(s) - cut] for s in data.raw]
    return Dataset(None, None, [], "interactions", data.name, raw, None, data.keys)


def numeric_times(values: Any, column: str, where: str | Path) -> np.ndarray:
    """A column of timestamps -> float64 for ordering: numbers as they are, or every value an ISO 8601 date or
    date-time (``2020-01-31``, ``2020-01-31T10:00:00``); one error line naming the first value that is neither."""
    import pandas as pd

    series = pd.Series(values).reset_index(drop=True)
    times = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(times))
    if len(bad) and len(bad) == len(series):  # no number at all: dates?
        dates = pd.to_datetime(series, format="ISO8601", errors="coerce", utc=True)
        if not dates.isna().any():
            return (dates - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
        bad = np.flatnonzero(dates.isna().to_numpy())
    if len(bad):
        rule = "neither a number nor an ISO 8601 date" if len(bad) == len(series) or not np.isfinite(times).any() \
            else "not a number like the column's other values"
        raise SelfmetaError(f"{where}, row {int(bad[0]) + 1}: timestamp column {column!r} holds "
                            f"{str(series.iloc[bad[0]])!r}, {rule}")
    return times


def interactions_from_frame(frame: Any, where: str | Path, name: str, split: str, user_column: str | None = None,
                            item_column: str | None = None, time_column: str | None = None,
                            rating_column: str | None = None, min_rating: float | None = None,
                            users: str = "all") -> Dataset:
    """A DataFrame of interaction rows -> the ``split`` of users' sequences (see the module docstring)."""
    import pandas as pd

    named = {"--user-column": user_column, "--item-column": item_column, "--time-column": time_column}
    unnamed = [flag for flag, column in named.items() if column is None]
    if unnamed:
        raise SelfmetaError(f"{where}: an interaction log needs {', '.join(unnamed)}; its columns are: "
                            f"{', '.join(map(str, frame.columns))}")
    if min_rating is not None and rating_column is None:
        raise SelfmetaError("--min-rating needs --rating-column: the column the threshold applies to")
    wanted = [user_column, item_column, time_column] + ([rating_column] if rating_column is not None else [])
    columns = [str(c) for c in frame.columns]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise SelfmetaError(f"{where}: no column {', '.join(map(repr, missing))}; its columns are: "
                            f"{', '.join(columns)}")
    frame = frame.rename(columns=str)
    for column in (user_column, item_column):
        absent = np.flatnonzero(frame[column].isna().to_numpy())
        if len(absent):
            raise SelfmetaError(f"{where}, row {int(absent[0]) + 1}: no value in column {column!r}")
    times = numeric_times(frame[time_column], time_column, where)
    keep = np.ones(len(frame), dtype=bool)
    if rating_column is not None:
        ratings = pd.to_numeric(frame[rating_column], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isnan(ratings))
        if len(bad):
            raise SelfmetaError(f"{where}, row {int(bad[0]) + 1}: rating column {rating_column!r} holds "
                                f"{str(frame[rating_column].iloc[bad[0]])!r}, not a number")
        if min_rating is not None:
            keep = ratings >= min_rating
            if not keep.any():
                raise SelfmetaError(f"{where}: no rating reaches --min-rating {min_rating:g}")
    data = sequences_from_log(ids(frame[user_column])[keep], ids(frame[item_column])[keep], times[keep], where, name)
    return leave_one_out(data, split, users, where)


def ids(column: Any) -> np.ndarray:
    """User or item IDs as strings; whole numbers read as floats (a column with a gap) are written without
    their ``.0``, so that ``12`` names the same item in every file."""
    values = column.to_numpy()
    if values.dtype.kind == "f" and np.all(values == np.round(values)):
        values = values.astype(np.int64)
    return values.astype(str)


def _movielens_folder(path: Path) -> Path | None:
    """The folder holding ``u.data`` or ``ratings.dat``: ``path`` itself, or its single subfolder that does."""
    if not path.is_dir():
        return None
    for folder in (path, *sorted(p for p in path.iterdir() if p.is_dir())):
        if (folder / "u.data").is_file() or (folder / "ratings.dat").is_file():
            return folder
    return None


@SOURCES.register("movielens")
class MovieLens(DataSource):
    name = "movielens"
    description = ("MovieLens ratings in GroupLens's layout (ml-100k's u.data, ml-1m's ratings.dat): users' "
                   "movies in time order, leave-one-out splits; --min-rating for implicit feedback, --users warm|cold|coldval")
    splits = tuple(SPLIT_END)
    options = ("min_rating", "users")

    def detect(self, path: Path) -> bool:
        return _movielens_folder(path) is not None

    def frame(self, path: Path) -> Any:
        import pandas as pd

        folder = _movielens_folder(path)
        if folder is None:
            raise SelfmetaError(f"{path}: no u.data (ml-100k) or ratings.dat (ml-1m) in it")
        names = ["user", "item", "rating", "time"]
        if (folder / "u.data").is_file():
            data, sep = read_bytes(folder / "u.data"), "\t"
        else:
            data, sep = read_bytes(folder / "ratings.dat").replace(b"::", b"\t"), "\t"
        try:
            frame = pd.read_csv(io.BytesIO(data), sep=sep, header=None, names=names, dtype=str)
        except Exception as exc:  # pandas raises many types for malformed files
            raise SelfmetaError(f"{folder}: cannot read the ratings ({type(exc).__name__}: {exc})".splitlines()[0]) from None
        if frame.empty or frame.isna().any().any():
            row = int(np.flatnonzero(frame.isna().any(axis=1).to_numpy())[0]) + 1 if not frame.empty else 0
            raise SelfmetaError(f"{folder}: the ratings file is empty" if frame.empty else
                                f"{folder}, line {row}: not user, item, rating and time")
        return frame

    def load(self, path: Path, split: str, min_rating: float | None = None, users: str = "all",
             **options: Any) -> Dataset:
        data = interactions_from_frame(self.frame(path), path, path.name, split, "user", "item", "time",
                                       "rating", min_rating, users)
        data.info = self.item_info(path)
        return data

    def item_info(self, path: Path) -> dict[str, dict[str, Any]] | None:
        """Each movie's title and genres by item ID (``u.item`` with ``u.genre``'s names, or ``movies.dat``;
        latin-1, as GroupLens writes them); None where the folder has neither."""
        folder = _movielens_folder(path)
        if folder is None:
            return None
        if (folder / "u.item").is_file():
            genres = [line.split("|")[0] for line in read_bytes(folder / "u.genre").decode("latin-1").splitlines()
                      if "|" in line] if (folder / "u.genre").is_file() else []
            info = {}
            for line in read_bytes(folder / "u.item").decode("latin-1").splitlines():
                fields = line.split("|")
                if len(fields) < 2:
                    continue
                flags = fields[5:5 + len(genres)]
                info[fields[0]] = {"name": fields[1], "categories": [g for g, f in zip(genres, flags) if f == "1"]}
            return info
        if (folder / "movies.dat").is_file():
            lines = read_bytes(folder / "movies.dat").decode("latin-1").splitlines()
            return {f[0]: {"name": f[1], "categories": f[2].split("|") if len(f) > 2 and f[2] else []}
                    for f in (line.split("::") for line in lines) if len(f) > 1}
        return None
