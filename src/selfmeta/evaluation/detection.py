"""Reporting a detection: the labelled windows of a series, and the pictures people judge a detector by.

``selfmeta detect`` draws one long series with its scores beneath (``plot_series``) and, for items, the
histogram of their scores (``plot_item_scores``). Both are drawn on a plain ``Figure`` with the Agg canvas
(no pyplot, no global state, no display) and written whole by :func:`selfmeta.files.atomic_write`.

Labelled anomaly windows come from NAB's layout (``labels/combined_windows.json`` in a folder above the CSV,
keyed by ``group/file.csv`` under ``data/``) or from a JSON file that lists ``[start, end]`` timestamp pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from selfmeta.errors import SelfmetaError
from selfmeta.files import atomic_write

Windows = list[tuple[np.datetime64, np.datetime64]]

# Figure width: one inch per ROWS_PER_INCH rows, between these bounds (a NAB series of 4,000 rows: 16 in).
ROWS_PER_INCH = 250
MIN_WIDTH, MAX_WIDTH = 10.0, 40.0
DPI = 100


def as_windows(pairs: object, where: str) -> Windows:
    """A JSON list of ``[start, end]`` timestamp pairs -> (start, end) datetime64[ns], or one error line."""
    if not isinstance(pairs, list):
        raise SelfmetaError(f"{where}: expected a list of [start, end] timestamp pairs")
    out = []
    for pair in pairs:
        try:
            start, end = pair
            out.append((np.datetime64(str(start), "ns"), np.datetime64(str(end), "ns")))
        except (TypeError, ValueError):
            raise SelfmetaError(f"{where}: {str(pair)[:60]!r} is not a [start, end] timestamp pair") from None
    return out


def read_windows(path: str | Path) -> Windows:
    """A JSON file holding a list of ``[start, end]`` timestamp pairs (``--windows``)."""
    path = Path(path)
    try:
        pairs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SelfmetaError(f"{path}: not a readable JSON file ({exc})".splitlines()[0]) from None
    return as_windows(pairs, str(path))


def nab_windows(csv_path: str | Path) -> Windows | None:
    """The labelled windows of a series of a NAB folder: walk up from the CSV to the first folder holding
    ``labels/combined_windows.json`` and look up the series' key ``group/file.csv`` (its path under that
    folder's ``data/``). None where the CSV is in no NAB folder or the labels do not name it."""
    path = Path(csv_path).resolve()
    for root in path.parents:
        labels = root / "labels" / "combined_windows.json"
        if not labels.is_file():
            continue
        try:
            key = path.relative_to(root / "data").as_posix()
        except ValueError:
            return None
        try:
            table = json.loads(labels.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SelfmetaError(f"{labels}: not readable JSON ({exc})".splitlines()[0]) from None
        if not isinstance(table, dict) or key not in table:
            return None
        return as_windows(table[key], f"{labels}, {key}")
    return None


def _figure(width: float, height: float, rows: int = 1, ratios: tuple[int, ...] | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": ratios})[:, 0]
    return fig, axes


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def plot_series(path: str | Path, timestamps: np.ndarray, values: np.ndarray, names: list[str], scores: np.ndarray,
                threshold: float, flagged: np.ndarray, probation: int, windows: Windows | None = None,
                title: str = "") -> None:
    """Write a PNG of one series scored online: its values (n, C) above, its scores (n,) beneath with the
    threshold, the flagged rows marked on both, the probationary period shaded grey and the labelled anomaly
    windows shaded orange. The width grows with the series' length; dates label the x axis."""
    import matplotlib.dates as mdates

    n = len(timestamps)
    values = np.asarray(values, dtype=np.float64).reshape(n, -1)                     # (n, C)
    width = float(np.clip(n / ROWS_PER_INCH, MIN_WIDTH, MAX_WIDTH))
    fig, (top, bottom) = _figure(width, 6.5, 2, (2, 1))
    times = np.asarray(timestamps, dtype="datetime64[ns]")
    hit = np.flatnonzero(flagged)
    for ax in (top, bottom):  # the shading is explained once, in the upper legend
        if probation > 0:
            ax.axvspan(times[0], times[min(probation, n - 1)], color="0.85", zorder=0,
                       label=f"probationary period ({probation} rows, not scored)" if ax is top else None)
        for k, (start, end) in enumerate(windows or []):
            ax.axvspan(start, end, color="tab:orange", alpha=0.25, zorder=0,
                       label="labelled anomaly window" if k == 0 and ax is top else None)
    for c in range(values.shape[1]):
        top.plot(times, values[:, c], lw=0.8, label=names[c] if c < len(names) else f"value {c}")
    if len(hit):
        top.scatter(times[hit], values[hit].max(1), s=18, color="tab:red", zorder=3,
                    label=f"flagged ({len(hit)} row{'s' if len(hit) > 1 else ''})")
    top.set_ylabel("value")
    top.legend(loc="upper left", fontsize=8, ncols=2)
    top.set_title(title, loc="left", fontsize=10)

    bottom.plot(times, scores, lw=0.8, color="tab:blue", label="anomaly score")
    bottom.axhline(threshold, ls="--", lw=1, color="tab:red", label=f"threshold {threshold:g}")
    if len(hit):
        bottom.scatter(times[hit], scores[hit], s=18, color="tab:red", zorder=3)
    finite = scores[np.isfinite(scores)]
    low = min(0.0, float(finite.min())) if len(finite) else 0.0
    high = max(1.0, float(finite.max()), float(threshold)) if len(finite) else 1.0
    bottom.set_ylim(low - 0.03 * (high - low), high + 0.03 * (high - low))
    bottom.set_ylabel("score")
    bottom.legend(loc="upper left", fontsize=8)
    locator = mdates.AutoDateLocator(maxticks=max(6, int(width)))
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    bottom.set_xlim(times[0], times[-1])
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    _save(fig, Path(path))


def plot_item_scores(path: str | Path, scores: np.ndarray, threshold: float, labels: list[str] | None = None,
                     title: str = "") -> None:
    """Write a PNG of the items' score histogram with the threshold; one outline per label when given."""
    fig, (ax,) = _figure(8.0, 4.5)
    bins = np.histogram_bin_edges(scores, bins=min(50, max(10, len(scores) // 10)))
    ax.hist(scores, bins=bins, color="0.75", label=f"all items ({len(scores)})")
    if labels is not None:
        names = sorted(set(labels))
        if len(names) <= 10:
            labels_arr = np.asarray(labels)
            for name in names:
                ax.hist(scores[labels_arr == name], bins=bins, histtype="step", lw=1.2, label=f"label {name}")
    ax.axvline(threshold, ls="--", color="tab:red", label=f"threshold {threshold:g}")
    ax.set(xlabel="anomaly score (higher = more anomalous)", ylabel="items")
    ax.set_title(title, loc="left", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, Path(path))
