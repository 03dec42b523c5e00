"""Variants of the NAB ``memory`` detector, each scored on half A of the series only (NAB's standard profile,
threshold tuned on half A): what was tried against the defaults after benchmarks/nab.py.

    python benchmarks/nab_variants.py --encoder runs/nab/encoder-ts2vec

Rows: the defaults; 16- and 64-row windows through the encoder; the memory distance combined with the
change distance (to the window just before); HTM-style z-scores of the distance; and the encoder itself
adapted to each series by a few steps of its own loss on the series' probationary windows (an inner loop,
as MAML/Reptile adapt) before the memory is built. One thread.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from selfmeta.anomaly.learned import (  # noqa: E402
    WindowMemory, beyond_range, causal_windows, left_nearest, probation_units, trailing_max,
)
from selfmeta.anomaly.nab import halves, read_corpus, score_corpus  # noqa: E402
from selfmeta.data.dataset import Dataset  # noqa: E402
from selfmeta.engine.model import load_method  # noqa: E402

NAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"


def smoothed(d: np.ndarray, rows: int) -> np.ndarray:
    d = np.where(np.isfinite(d), d, 0.0)
    return np.convolve(np.r_[np.full(rows - 1, d[0]), d], np.ones(rows) / rows, "valid")


def ratio(d: np.ndarray) -> np.ndarray:
    """The defaults' ratio: 3-row mean over the largest of the 500 rows before (from row 200)."""
    d = smoothed(d, 3)
    return d / np.maximum(trailing_max(np.where(np.arange(len(d)) >= 200, d, 0.0), 500), 1e-12)


def zscore(d: np.ndarray, rows: int) -> np.ndarray:
    """HTM's way: the 10-row mean against the mean and deviation of the ``rows`` before, positive part."""
    d = smoothed(d, 10)
    s1, s2 = np.r_[0, np.cumsum(d)], np.r_[0, np.cumsum(d * d)]
    t = np.arange(len(d))
    lo = np.maximum(0, t - rows)
    n = np.maximum(t - lo, 1)
    mean = (s1[t] - s1[lo]) / n
    var = np.maximum((s2[t] - s2[lo]) / n - mean * mean, 1e-12)
    return np.maximum((d - mean) / np.sqrt(var), 0.0)


def finish(r: np.ndarray, probation: int) -> np.ndarray:
    s = r / (1 + r)
    s = np.where(s > trailing_max(s, 50), s, 0.5 * s)
    s[:probation] = 0.0
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", required=True, help="the encoder run of benchmarks/nab.py")
    args = parser.parse_args()
    torch.set_num_threads(1)
    corpus = read_corpus(NAB)
    half_a, _ = halves(corpus)
    series = [corpus[i] for i in half_a]
    boost = [1 + 300 * beyond_range(s.values[:, None], 10000) for s in series]

    def score_a(scores: list[np.ndarray]) -> float:
        return score_corpus(series, scores)["standard"]["score"]

    def memory_and_change(window: int, backbone=None) -> tuple[list, list]:
        detector = WindowMemory(encoder=args.encoder, window=window)
        memory, change = [], []
        for s in series:
            if backbone is None:
                f = detector.features(s.values[:, None], s.probation)
            else:
                w = causal_windows(probation_units(s.values[:, None], s.probation), window)
                with torch.no_grad():
                    f = backbone(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))).float()
            memory.append(left_nearest(f, window).numpy())
            d = np.full(len(f), np.inf)
            d[window:] = (f[window:] - f[:-window]).norm(dim=1).numpy()
            change.append(d)
        return memory, change

    rows = {}
    memory, change = memory_and_change(32)
    rows["defaults (32-row windows, memory)"] = [finish(ratio(m) * b, s.probation)
                                                 for m, b, s in zip(memory, boost, series)]
    for window in (16, 64):
        m16, _ = memory_and_change(window)
        rows[f"{window}-row windows"] = [finish(ratio(m) * b, s.probation) for m, b, s in zip(m16, boost, series)]
    rows["memory x change"] = [finish(ratio(m) * ratio(c) * b, s.probation)
                               for m, c, b, s in zip(memory, change, boost, series)]
    rows["larger of memory and change"] = [finish(np.maximum(ratio(m), ratio(c)) * b, s.probation)
                                           for m, c, b, s in zip(memory, change, boost, series)]
    for history in (1000, 8640):
        rows[f"z-score over {history} rows"] = [finish(zscore(m, history) * b, s.probation)
                                                for m, b, s in zip(memory, boost, series)]
        rows[f"ratio x (1 + z-score over {history} rows)"] = [
            finish(ratio(m) * (1 + zscore(m, history)) * b, s.probation) for m, b, s in zip(memory, boost, series)]
    base = load_method(args.encoder, Dataset(torch.zeros(4, 1, 32), None, [], "series", "template"))
    for steps, lr in ((20, 1e-3), (10, 1e-4), (50, 1e-4)):
        rng = np.random.default_rng(0)
        torch.manual_seed(0)
        scores = []
        for s, b in zip(series, boost):
            windows = np.ascontiguousarray(causal_windows(probation_units(s.values[:, None], s.probation), 32),
                                           dtype=np.float32)
            method = copy.deepcopy(base).train()
            optimizer = torch.optim.AdamW(method.parameters(), lr=lr, weight_decay=0.0)
            for _ in range(steps):  # the inner loop: the method's own loss on probationary windows only
                batch = rng.choice(np.arange(31, s.probation), 8, replace=False)
                loss = method(torch.from_numpy(windows[batch]), torch.from_numpy(batch)).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            backbone = method.backbone.eval()
            with torch.no_grad():
                f = torch.cat([backbone(torch.from_numpy(windows[j:j + 4096]))
                               for j in range(0, len(windows), 4096)]).float()
            scores.append(finish(ratio(left_nearest(f, 32).numpy()) * b, s.probation))
        rows[f"encoder adapted per series: {steps} steps, lr {lr:g}"] = scores
    print("| variant | standard score, half A |")
    print("|---|---:|")
    for name, scores in rows.items():
        print(f"| {name} | {score_a(scores):.1f} |", flush=True)


if __name__ == "__main__":
    main()
