"""Online detectors for one long series: every row gets a score in [0, 1] that uses only the rows up to it.

The contract (``StreamDetector``): ``score(values, probation)`` takes the series' values (n, C) float64 in
time order and the length of its probationary period (the first rows, which the detector may learn from and
which are not scored), and returns (n,) float64 scores, higher for more anomalous rows. A detector may
process the series in batches, but the score of row t must not change when rows after t change (tests check
this for every registered detector).

Registered here: ``null`` (0.5 everywhere: NAB's baseline) and ``windowed_gaussian`` (NAB's statistical
baseline, reproduced exactly). Detectors on learned features are in :mod:`selfmeta.anomaly.learned`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfc

from selfmeta.options import Option
from selfmeta.registry import Registry


class StreamDetector:
    """Scores a series online; see the module's docstring for the contract.

    ``threshold`` is the score from which ``selfmeta detect`` flags a row by default: the threshold NAB's
    standard profile chose for the detector on the NAB corpus (BENCHMARKS.md). A detector that computes
    features with a trained encoder takes it as the ``encoder`` option (a run directory)."""

    options: dict[str, Option] = {}
    threshold: float = 0.5

    def score(self, values: np.ndarray, probation: int) -> np.ndarray:
        raise NotImplementedError


STREAM_DETECTORS: Registry[type[StreamDetector]] = Registry("stream detector")


@STREAM_DETECTORS.register("null")
class Null(StreamDetector):
    """Scores every row 0.5: NAB's null detector, whose score normalizes the others to 0."""

    def score(self, values: np.ndarray, probation: int) -> np.ndarray:
        return np.full(len(values), 0.5)


def gaussian_tail_score(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """1 - Q(|x - mean| / std): 0.5 at the mean, towards 1 in either tail (Q: the normal's upper tail)."""
    return 1.0 - 0.5 * erfc(np.abs(values - mean) / std / np.sqrt(2.0))


def windowed_stats(x: np.ndarray, window: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean and standard deviation (n,) that NAB's windowed Gaussian holds when it scores each row.

    Its window grows one row at a time up to ``window`` rows (the statistics are recomputed after each row),
    then slides by ``step`` rows once ``step`` new rows have arrived. So row t (t >= 1) is scored with the
    rows [0, t) while t <= window, and with [s step, window + s step), s = (t - window) // step, after.
    A zero deviation counts as 1e-6 (NAB's rule)."""
    n = len(x)
    mean = np.zeros(n)
    std = np.ones(n)
    grow = min(n, window + 1)
    if grow > 1:
        # Growing part by running sums, shifted by the first value so that a flat start has exactly zero
        # variance and large offsets do not cancel digits.
        shifted = x[: grow - 1] - x[0]
        count = np.arange(1, grow)
        m = np.cumsum(shifted) / count
        mean[1:grow] = m + x[0]
        std[1:grow] = np.sqrt(np.maximum(np.cumsum(shifted * shifted) / count - m * m, 0.0))
    for start in range(window, n, step):  # sliding part: one window per step, computed directly
        block = x[start - window: start]
        mean[start: start + step] = block.mean()
        std[start: start + step] = block.std()
    std[std == 0.0] = 1e-6
    return mean, std


@STREAM_DETECTORS.register("windowed_gaussian")
class WindowedGaussian(StreamDetector):
    """NAB's windowed Gaussian (``nab/detectors/gaussian/windowedGaussian_detector.py``, NAB v1.1): the tail
    probability of each value under a Gaussian fitted to a sliding window of the values before it, 6400 rows
    sliding by 100 (the sizes NAB tuned on its corpus). Its first row scores 0. With several channels, each
    is scored alone and a row takes the largest score."""

    threshold = 1.0  # NAB's standard profile, on its corpus (the scores are 1.0 from 7.1 deviations on)
    options = {
        "window": Option("rows the Gaussian is fitted to (NAB's tuned value)", gt=1),
        "step": Option("rows between refits once the window is full", gt=0),
    }

    def __init__(self, window: int = 6400, step: int = 100) -> None:
        self.window = window
        self.step = step

    def score(self, values: np.ndarray, probation: int) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        out = np.zeros(len(values))
        for channel in values.T:
            mean, std = windowed_stats(channel, self.window, self.step)
            out = np.maximum(out, gaussian_tail_score(channel, mean, std))
        out[0] = 0.0
        return out
