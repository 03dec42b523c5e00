"""The Numenta Anomaly Benchmark's scoring, reimplemented from numenta/NAB v1.1 (``nab/sweeper.py``,
``nab/optimizer.py``, ``nab/scorer.py``, ``nab/runner.py``), vectorized.

A detector gives every row of every series an anomaly score; a row is a detection when its score is at
least the threshold. Each row is worth a weight that depends only on where it lies (``row_weights``):

- inside a labelled window of width w whose last row is r, row i is worth
  ``tp * S(-(r - i + 1) / w) / S(-1)``, where ``S(x) = 2 sigmoid(-5x) - 1`` (and -1 for x >= 3): an early
  detection earns about tp, one at the window's end little; only the earliest detection in a window counts
  (NAB takes the largest weight among the detected rows, which is the earliest one's);
- a window without a detection costs ``fn``;
- outside windows, a detection costs ``fp * S(|r - i| / (w - 1))`` after a window (r, w: the previous one),
  so a false alarm right after a window costs little, and ``fp`` before any window;
- the first ``min(floor(0.15 n), 750)`` rows (the probationary period) are not scored at all.

One threshold per detector and profile is chosen by sweeping every distinct score over the whole corpus
(``sweep``), and the raw score is normalized as ``100 (raw - null) / (perfect - null)``, where ``null`` is the
raw score of the detector that gives every row 0.5 and ``perfect`` is tp times the number of windows.

NAB has been criticised for tuning this threshold on the corpus it scores (Wu & Keogh, "Current time series
anomaly detection benchmarks are flawed and are creating the illusion of progress", TKDE 2021):
``cross_threshold`` also reports the score with the threshold chosen on half of the series and applied to
the other half.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from selfmeta.errors import SelfmetaError

PROBATION_FRACTION = 0.15
PROBATION_MAX = 750        # NAB: probationPercent * 5000
NULL_SCORE = 0.5           # the null detector's score on every row


@dataclass(frozen=True)
class Profile:
    """A NAB application profile: the weights of a true positive, a false positive and a missed window."""

    tp: float
    fp: float
    fn: float


PROFILES = {
    "standard": Profile(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": Profile(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": Profile(tp=1.0, fp=0.11, fn=2.0),
}


@dataclass
class Series:
    """One NAB series: its name (``group/file.csv``), timestamps (n,) datetime64[ns], values (n,) float64,
    and its labelled windows as (start, end) timestamps in file order."""

    name: str
    timestamps: np.ndarray
    values: np.ndarray
    windows: list[tuple[np.datetime64, np.datetime64]]

    @property
    def probation(self) -> int:
        return probation_length(len(self.values))


def probation_length(rows: int) -> int:
    """Rows at the start of a series that a detector learns from and that are not scored."""
    return int(min(math.floor(PROBATION_FRACTION * rows), PROBATION_MAX))


def scaled_sigmoid(position: np.ndarray) -> np.ndarray:
    """NAB's S(x) = 2 sigmoid(-5x) - 1, and -1 from x = 3 on: 0.987 at the left edge of a window (x = -1),
    0 at its right edge, -0.987 one window-width after it."""
    position = np.asarray(position, dtype=np.float64)
    with np.errstate(over="ignore"):
        out = 2.0 / (1.0 + np.exp(5.0 * position)) - 1.0
    return np.where(position >= 3.0, -1.0, out)


def window_rows(timestamps: np.ndarray,
                windows: Iterable[tuple[np.datetime64, np.datetime64]]) -> list[tuple[int, int, int, int]]:
    """Each window's rows as NAB's sweeper finds them, in file order: (first row, last row, right index, width).

    NAB enters a window at the first row (after the previous window) whose timestamp equals its start and
    leaves it at the first row from there whose timestamp equals its end; its width and the position of a
    row in it count from the first rows of the file that carry the start and end timestamps (the same rows,
    unless the file repeats a timestamp). A window whose start is no row's timestamp is never entered, and
    neither is any window after it (NAB pops windows in order)."""
    out = []
    cursor = 0
    for start, end in windows:
        starts = np.flatnonzero(timestamps[cursor:] == start)
        if len(starts) == 0:
            break
        first = cursor + int(starts[0])
        ends = np.flatnonzero(timestamps[first:] == end)
        if len(ends) == 0:
            raise SelfmetaError(f"window ({start}, {end}): its end is no row's timestamp")
        last = first + int(ends[0])
        right = int(np.flatnonzero(timestamps == end)[0])
        width_start = int(np.flatnonzero(timestamps == start)[0])
        out.append((first, last, right, right - width_start + 1))
        cursor = last + 1
    return out


@dataclass
class Weights:
    """Per-row scoring weights of one series under one profile (probationary rows removed).

    ``weight`` (m,) is what a detection on the row is worth; ``window`` (m,) is the index of the window the
    row lies in (-1 outside windows), counted in the series; ``windows`` is the number of scorable windows
    (those with at least one row after the probationary period); ``rows`` (m,) are the rows' indices."""

    weight: np.ndarray
    window: np.ndarray
    windows: int
    rows: np.ndarray


def row_weights(timestamps: np.ndarray, windows: list, profile: Profile) -> Weights:
    """Faithful to ``Sweeper.calcSweepScore``: every row's weight, vectorized over rows."""
    n = len(timestamps)
    index = np.arange(n)
    weight = np.empty(n)
    window = np.full(n, -1, dtype=np.int64)
    # Outside windows: the distance to the last row of the window that ended before (3.0: none yet).
    past = np.full(n, 3.0)
    max_tp = float(scaled_sigmoid(-1.0))
    spans = window_rows(timestamps, windows)
    for k, (first, last, right, width) in enumerate(spans):
        inside = slice(first, last + 1)
        window[inside] = k
        weight[inside] = scaled_sigmoid(-(right - index[inside] + 1) / width) * profile.tp / max_tp
        following = spans[k + 1][0] if k + 1 < len(spans) else n
        after = slice(last + 1, following)
        with np.errstate(divide="ignore"):
            past[after] = np.abs(right - index[after]) / float(width - 1) if width > 1 else np.inf
    outside = window < 0
    weight[outside] = scaled_sigmoid(past[outside]) * profile.fp
    keep = index >= probation_length(n)
    kept_windows = np.unique(window[keep & (window >= 0)])
    remap = np.full(len(spans) + 1, -1, dtype=np.int64)
    remap[kept_windows] = np.arange(len(kept_windows))
    return Weights(weight[keep], remap[window[keep]], len(kept_windows), index[keep])


@dataclass
class Sweep:
    """The corpus score at every distinct threshold, highest threshold first.

    ``thresholds[0]`` is +inf (nothing detected: NAB's 1.1), then every distinct score in decreasing order;
    ``scores[j]`` is the summed raw score when every row whose score is at least ``thresholds[j]`` is a
    detection; ``tp``/``fp`` count detected rows inside/outside windows."""

    thresholds: np.ndarray
    scores: np.ndarray
    tp: np.ndarray
    fp: np.ndarray

    def best(self) -> tuple[float, float]:
        """(threshold, raw score) with the highest score; among ties the highest threshold, as NAB's
        stable sort of ``calcScoreByThreshold``'s list does."""
        j = int(np.argmax(self.scores))
        return float(self.thresholds[j]), float(self.scores[j])

    def at(self, threshold: float) -> float:
        """The raw score with detections at scores >= threshold."""
        j = int(np.searchsorted(-self.thresholds, -threshold, side="right")) - 1
        return float(self.scores[max(j, 0)])


def sweep(anomaly_scores: list[np.ndarray], weights: list[Weights], profile: Profile) -> Sweep:
    """``Sweeper.calcScoreByThreshold`` over a corpus, in O(m log m) for m scorable rows.

    Rows are sorted by score, highest first. A row outside windows adds its (negative) weight once detected;
    a window contributes -fn until its first row is detected and then the largest weight among its detected
    rows. The running total is read after the last row of each distinct score."""
    score = np.concatenate([s[w.rows] for s, w in zip(anomaly_scores, weights)]).astype(np.float64)
    weight = np.concatenate([w.weight for w in weights])
    offsets = np.cumsum([0] + [w.windows for w in weights])
    window = np.concatenate([np.where(w.window >= 0, w.window + o, -1) for w, o in zip(weights, offsets[:-1])])
    total_windows = int(offsets[-1])
    order = np.argsort(-score, kind="stable")
    score, weight, window = score[order], weight[order], window[order]

    gain = np.where(window < 0, weight, 0.0)  # (m,) what detecting each row adds to the total
    inside = np.flatnonzero(window >= 0)
    if len(inside):
        # Running maximum of the weight within each window, in sorted order: shift each window's values by a
        # multiple of a span wider than any weight so that one cumulative maximum never crosses windows.
        ids = window[inside]
        group = np.argsort(ids, kind="stable")                   # inside rows grouped by window, sorted order kept
        span = 4.0 * (abs(profile.tp) + abs(profile.fn) + 1.0)
        shifted = weight[inside][group] + ids[group] * span
        running = np.maximum.accumulate(shifted) - ids[group] * span
        first = np.r_[True, ids[group][1:] != ids[group][:-1]]
        previous = np.where(first, -profile.fn, np.r_[-profile.fn, running[:-1]])
        gain[inside[group]] = np.maximum(running, -profile.fn) - previous
    total = -profile.fn * total_windows + np.cumsum(gain)
    last = np.r_[score[1:] != score[:-1], True] if len(score) else np.zeros(0, dtype=bool)
    tp = np.cumsum(window >= 0)
    fp = np.cumsum(window < 0)
    return Sweep(thresholds=np.r_[np.inf, score[last]], scores=np.r_[-profile.fn * total_windows, total[last]],
                 tp=np.r_[0, tp[last]], fp=np.r_[0, fp[last]])


def read_corpus(root: str | Path) -> list[Series]:
    """A NAB folder: ``data/<group>/<series>.csv`` and ``labels/combined_windows.json``.

    Rows are taken in file order, as NAB does (eight of its files repeat or reorder a timestamp around a
    clock change: NAB scores them as they are, and so does this)."""
    import pandas as pd

    root = Path(root)
    labels = root / "labels" / "combined_windows.json"
    if not root.is_dir():
        raise SelfmetaError(f"{root}: not a folder (a NAB folder holds data/ and labels/combined_windows.json)")
    if not labels.is_file():
        raise SelfmetaError(f"{root}: no labels/combined_windows.json (a NAB folder holds data/<group>/<series>.csv "
                            "and labels/combined_windows.json)")
    try:
        table = json.loads(labels.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SelfmetaError(f"{labels}: not readable JSON ({exc})".splitlines()[0]) from None
    if not isinstance(table, dict) or not table:
        raise SelfmetaError(f"{labels}: expected an object mapping each series' path to its windows")
    corpus = []
    for name in sorted(table):
        path = root / "data" / name
        if not path.is_file():
            raise SelfmetaError(f"{labels} names {name}, but {path} does not exist")
        try:
            frame = pd.read_csv(path)
            times = pd.to_datetime(frame["timestamp"]).to_numpy(dtype="datetime64[ns]")
            values = pd.to_numeric(frame["value"], errors="raise").to_numpy(dtype=np.float64)
        except (KeyError, ValueError, TypeError, pd.errors.ParserError) as exc:
            raise SelfmetaError(f"{path}: expected timestamp,value rows with numeric values ({exc})".splitlines()[0]) \
                from None
        if not np.isfinite(values).all():
            raise SelfmetaError(f"{path}: missing or infinite values (NAB series are complete)")
        try:
            windows = [(np.datetime64(a, "ns"), np.datetime64(b, "ns")) for a, b in table[name]]
        except (TypeError, ValueError):
            raise SelfmetaError(f"{labels}: the windows of {name} are not [start, end] timestamp pairs") from None
        corpus.append(Series(name, times, values, windows))
    return corpus


def null_scores(corpus: list[Series]) -> list[np.ndarray]:
    return [np.full(len(s.values), NULL_SCORE) for s in corpus]


def as_stored(scores: np.ndarray) -> np.ndarray:
    """Scores as NAB reads them back from its results files: Python 2 wrote floats with 12 significant
    digits, so every score above 1 - 5e-13 became 1.0 and tied there. The tie matters: the windowed
    Gaussian's published scores (39.6 / 20.9 / 47.4) come out only with it (40.1 / 23.9 / 47.7 without)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.char.mod("%.12g", scores).astype(np.float64)


def check_scores(corpus: list[Series], anomaly_scores: list[np.ndarray]) -> list[np.ndarray]:
    if len(anomaly_scores) != len(corpus) or any(len(a) != len(s.values) for a, s in zip(anomaly_scores, corpus)):
        raise SelfmetaError("one anomaly score per row of every series is needed")
    if any(not np.isfinite(a).all() for a in anomaly_scores):
        raise SelfmetaError("anomaly scores must be finite numbers")
    return [as_stored(a) for a in anomaly_scores]


def score_corpus(corpus: list[Series], anomaly_scores: list[np.ndarray],
                 profiles: dict[str, Profile] = PROFILES) -> dict[str, dict[str, float]]:
    """Per profile: the threshold NAB's optimizer picks, the raw score there and the normalized score."""
    anomaly_scores = check_scores(corpus, anomaly_scores)
    out = {}
    for name, profile in profiles.items():
        weights = [row_weights(s.timestamps, s.windows, profile) for s in corpus]
        threshold, raw = sweep(anomaly_scores, weights, profile).best()
        _, null = sweep(null_scores(corpus), weights, profile).best()
        perfect = profile.tp * sum(len(s.windows) for s in corpus)
        out[name] = {"threshold": threshold, "raw": raw, "null": null, "perfect": perfect,
                     "score": 100.0 * (raw - null) / (perfect - null)}
    return out


def halves(corpus: list[Series]) -> tuple[list[int], list[int]]:
    """A fixed split of the series in two: every other series of each group (``realKnownCause/...``) in name
    order, so that both halves hold every kind of data."""
    first: list[int] = []
    second: list[int] = []
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(corpus):
        groups.setdefault(s.name.split("/")[0], []).append(i)
    for members in groups.values():
        first += members[0::2]
        second += members[1::2]
    return sorted(first), sorted(second)


def cross_threshold(corpus: list[Series], anomaly_scores: list[np.ndarray],
                    profiles: dict[str, Profile] = PROFILES) -> dict[str, float]:
    """The normalized score with the threshold chosen on one half of the series and scored on the other,
    both ways; per profile, the score of all series together (the two halves' raw scores summed)."""
    anomaly_scores = check_scores(corpus, anomaly_scores)
    parts = halves(corpus)
    out = {}
    for name, profile in profiles.items():
        weights = [row_weights(s.timestamps, s.windows, profile) for s in corpus]
        raw = null = 0.0
        for tune, test in (parts, parts[::-1]):
            threshold, _ = sweep([anomaly_scores[i] for i in tune], [weights[i] for i in tune], profile).best()
            raw += sweep([anomaly_scores[i] for i in test], [weights[i] for i in test], profile).at(threshold)
            null_threshold, _ = sweep(null_scores([corpus[i] for i in tune]), [weights[i] for i in tune], profile).best()
            null += sweep(null_scores([corpus[i] for i in test]), [weights[i] for i in test], profile).at(null_threshold)
        perfect = profile.tp * sum(len(s.windows) for s in corpus)
        out[name] = 100.0 * (raw - null) / (perfect - null)
    return out
