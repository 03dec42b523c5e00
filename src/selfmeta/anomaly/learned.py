"""A series detector on learned window features, adapted to each series from its own normal windows.

Every row t is represented by the window of the last ``window`` values ending at t, in units of the
series' probationary period (its mean and deviation: the only statistics known when scoring starts). A
series encoder trained without labels on windows of many series (``selfmeta pretrain`` on series windows)
embeds each window; with no encoder, the raw window is its own feature.

Adaptation (``adapt="memory"``): the detector keeps a memory of the series' own windows (those of the
probationary period first, then every window once it no longer overlaps the present one) and scores a
window by its distance to the nearest one in memory: the left "discord" of the matrix-profile literature
(Yeh et al., ICDM 2016), on learned features. A pattern the series has shown before is close to memory; one
it has never shown is far. Without adaptation (``adapt="none"``), the same features are scored by their
distance to the window just before (t - window): change, with nothing learned about the series.

The distance becomes a score comparable across series, in [0, 1): the distance (averaged over ``smooth``
rows) over the largest distance of the ``history`` rows before (from row ``warmup`` on), r, mapped to
r / (1 + r), so a value above 0.5 is a record. As HTM's detector does for its "spatial anomaly" (Ahmad,
Lavin, Purdy & Agha, Neurocomputing 2017), a value outside the range of the ``range_rows`` values before it
multiplies r by 1 + ``range_weight`` times how far outside, in units of that range. As CAD-OSE and ARTime do, a row that does not exceed the largest score of the ``suppress``
rows before it is damped (halved): one alarm per event, not one per row of it.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from selfmeta.anomaly.stream import STREAM_DETECTORS, StreamDetector
from selfmeta.options import Option

ADAPT = ("memory", "none")
RAW_WINDOW = 32      # rows per window without an encoder
PAIR_BLOCK = 2**22   # distances held at once by the nearest-window search


def probation_units(values: np.ndarray, probation: int) -> np.ndarray:
    """(n, C) values in units of the probationary period's mean and deviation, per channel."""
    head = values[: max(probation, 2)]
    return (values - head.mean(0)) / (head.std(0) + 1e-8)


def causal_windows(values: np.ndarray, window: int) -> np.ndarray:
    """(n, C) -> (n, C, window): row t's window holds rows t - window + 1 .. t (the first value repeated
    before the start). A view: nothing is copied."""
    padded = np.concatenate([np.repeat(values[:1], window - 1, axis=0), values], axis=0)   # (n + w - 1, C)
    return sliding_window_view(padded, window, axis=0)                                     # (n, C, window)


def left_nearest(features: torch.Tensor, gap: int, block: int = PAIR_BLOCK) -> torch.Tensor:
    """(n,) Euclidean distance from each row's feature to the nearest feature of a row at least ``gap``
    rows earlier (inf where there is none): each row only looks back, so the result is causal.

    Computed block by block as ``|a|^2 + |b|^2 - 2 a.b`` over the rows that may be matched."""
    n = len(features)
    squared = features.pow(2).sum(1)                                                       # (n,)
    out = torch.full((n,), float("inf"))
    rows = max(1, block // max(n, 1))
    for start in range(gap, n, rows):
        stop = min(n, start + rows)
        reach = stop - gap                                                                 # candidates [0, reach)
        d2 = squared[start:stop, None] + squared[None, :reach] - 2 * features[start:stop] @ features[:reach].T
        t = torch.arange(start, stop)[:, None]
        d2.masked_fill_(torch.arange(reach)[None, :] > t - gap, float("inf"))              # only rows <= t - gap
        out[start:stop] = d2.min(1).values.clamp_min(0).sqrt()
    return out


def record_score(distance: np.ndarray, smooth: int, warmup: int, history: int, suppress: int,
                 boost: np.ndarray | None = None) -> np.ndarray:
    """Distances (n,) -> scores (n,) in [0, 1), causal: the trailing mean d over ``smooth`` rows, over the
    largest d of the ``history`` rows before (rows from ``warmup`` on), r (times ``boost`` where given),
    r -> r / (1 + r); then a row that does not exceed the largest score of the ``suppress`` rows before it is
    halved."""
    d = np.where(np.isfinite(distance), distance, 0.0)
    if smooth > 1:
        d = np.convolve(np.r_[np.full(smooth - 1, d[0]), d], np.ones(smooth) / smooth, "valid")
    reference = np.where(np.arange(len(d)) >= warmup, d, 0.0)
    record = trailing_max(reference, history)                                               # (n,) max of t-h..t-1
    ratio = d / np.maximum(record, 1e-12)
    if boost is not None:
        ratio = ratio * boost
    score = ratio / (1.0 + ratio)
    if suppress > 0:
        score = np.where(score > trailing_max(score, suppress), score, 0.5 * score)
    return score


def beyond_range(values: np.ndarray, rows: int) -> np.ndarray:
    """(n, C) -> (n,): how far each value lies outside the range of the ``rows`` values before it, in units of
    that range (0 inside it; the largest over channels). Causal."""
    out = np.zeros(len(values))
    for v in values.T:
        high, low = trailing_max(v, rows, fill=v[0]), -trailing_max(-v, rows, fill=-v[0])
        spread = np.maximum(high - low, 1e-9)
        out = np.maximum(out, (np.maximum(v - high, 0.0) + np.maximum(low - v, 0.0)) / spread)
    return out


def trailing_max(x: np.ndarray, rows: int, fill: float = 0.0) -> np.ndarray:
    """(n,) the largest of x[t - rows], ..., x[t - 1], counting ``fill`` for rows before the start."""
    return sliding_window_view(np.r_[np.full(rows, fill), x[:-1]], rows).max(1)


@STREAM_DETECTORS.register("memory")
class WindowMemory(StreamDetector):
    """Distance of each window's embedding to the series' own past windows (see the module docstring)."""

    threshold = 0.519  # NAB standard profile's choice for raw windows on its corpus (BENCHMARKS.md)
    options = {
        "encoder": Option("run directory or .safetensors file of a series encoder; null: raw windows"),
        "window": Option("rows per window; null: the encoder's input length (32 without an encoder)", ge=2),
        "adapt": Option("memory: learn the series' own windows; none: change from the window before",
                        choices=ADAPT),
        "smooth": Option("rows the distance is averaged over", ge=1),
        "warmup": Option("rows before the record distance starts being kept", ge=0),
        "history": Option("rows over which the largest distance is the reference a new one is compared to", ge=1),
        "suppress": Option("rows after a score during which lower scores are halved; 0: none", ge=0),
        "range_rows": Option("rows whose range a value is compared to (HTM's spatial anomaly); 0: off", ge=0),
        "range_weight": Option("how much a value outside that range, in units of the range, multiplies the "
                               "distance ratio", ge=0),
        "batch_size": Option("windows per forward pass of the encoder", ge=1),
    }

    def __init__(self, encoder: str | None = None, window: int | None = None, adapt: str = "memory", smooth: int = 3,
                 warmup: int = 200, history: int = 500, suppress: int = 50, range_rows: int = 10000,
                 range_weight: float = 300.0, batch_size: int = 4096) -> None:
        self.encoder = encoder
        self.window = window
        self.adapt = adapt
        self.smooth = smooth
        self.warmup = warmup
        self.history = history
        self.suppress = suppress
        self.range_rows = range_rows
        self.range_weight = range_weight
        self.batch_size = batch_size
        self._backbone = None

    def _load(self):
        from selfmeta.engine.model import load_backbone

        if self._backbone is None:
            backbone, self._description = load_backbone(self.encoder)
            self._backbone = backbone.eval()
            self._length = int(self._description["input_shape"][-1])
        return self._backbone

    def rows(self) -> int:
        """Rows per window: ``window``, else the encoder's input length, else 32."""
        if self.window is not None:
            return self.window
        if self.encoder is None:
            return RAW_WINDOW
        self._load()
        return self._length

    @torch.no_grad()
    def features(self, values: np.ndarray, probation: int) -> torch.Tensor:
        """(n, C) values -> (n, d) float32 features of the window ending at each row."""
        windows = causal_windows(probation_units(values, probation), self.rows())           # (n, C, window)
        if self.encoder is None:
            return torch.from_numpy(windows.reshape(len(windows), -1).astype(np.float32))
        from selfmeta.data.sources.series import series_dataset
        from selfmeta.engine.model import check_compatible

        backbone = self._load()
        check_compatible(self._description, series_dataset(windows[:1], "windows"))  # its modality, its channels
        out = [backbone(torch.from_numpy(windows[i:i + self.batch_size].astype(np.float32)))
               for i in range(0, len(windows), self.batch_size)]
        return torch.cat(out).float()                                                       # (n, d)

    def score(self, values: np.ndarray, probation: int) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        features = self.features(values, probation)
        if self.adapt == "memory":
            distance = left_nearest(features, self.rows()).numpy()
        else:  # the window just before, none of whose rows this one holds
            w = self.rows()
            distance = np.full(len(features), np.inf)
            distance[w:] = (features[w:] - features[:-w]).norm(dim=1).numpy()
        boost = 1.0 + self.range_weight * beyond_range(values, self.range_rows) if self.range_rows else None
        score = record_score(distance, self.smooth, self.warmup, self.history, self.suppress, boost)
        score[:probation] = 0.0
        return score
