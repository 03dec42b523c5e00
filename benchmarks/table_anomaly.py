"""Anomalies in a table with a known anomaly class: scikit-learn's bundled breast-cancer data (569 rows, 30
numeric columns), the 357 benign rows normal and the malignant rows subsampled to 10% of the data as
anomalies (40 rows, a different draw per seed): the "breastw"-style protocol of the ODDS / PyOD benchmarks.

    python benchmarks/table_anomaly.py [--seeds 5] [--epochs 200]

Unsupervised, as PyOD benchmarks run: every model sees all rows (normal and anomalous) without labels; the
labels only score the AUROC. Rows compared:

- Isolation Forest on the raw columns (scikit-learn, 200 trees): the usual baseline;
- kNN on the raw columns, standardized;
- selfmeta: an encoder learned without labels (``SelfSupervised``, MLP, method below) then the kNN (cosine,
  the default, and Euclidean), Isolation Forest or reconstruction-error detector on its features
  (``AnomalyDetector``).

The settings are the library's defaults, fixed before the run (there is no validation split to tune on).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from selfmeta.anomaly import AnomalyDetector
from selfmeta.api import SelfSupervised


def draw(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All benign rows and round(357 / 9) = 40 malignant rows, drawn with ``seed``: 10% anomalies."""
    data = load_breast_cancer()
    x, y = data.data.astype(np.float32), data.target          # target: 0 malignant, 1 benign
    benign, malignant = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    chosen = np.random.default_rng(seed).choice(malignant, size=round(len(benign) / 9), replace=False)
    rows = np.r_[benign, chosen]
    return x[rows], (y[rows] == 0).astype(int)                # 1 = anomaly


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--out", default=None, help="results.json to write")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: dict[str, list[float]] = {}

    def add(name: str, x: np.ndarray, y: np.ndarray, detector: AnomalyDetector) -> None:
        rows.setdefault(name, []).append(roc_auc_score(y, detector.fit(x).decision_scores_))

    start = time.perf_counter()
    for seed in range(args.seeds):
        x, y = draw(seed)
        scaled = StandardScaler().fit_transform(x)
        add("Isolation Forest, raw columns", x, y, AnomalyDetector(detector="iforest", random_state=seed))
        add("kNN, raw columns (standardized)", scaled, y,
            AnomalyDetector(detector="knn", detector_options={"metric": "euclidean"}))
        for method in ("simclr", "vicreg"):
            encoder = SelfSupervised(method=method, encoder="mlp", epochs=args.epochs, batch_size=128,
                                     random_state=seed).fit(x)
            for detector, options in (("knn", {}), ("knn", {"metric": "euclidean"}), ("iforest", {})):
                label = detector + (" (euclidean)" if options else " (cosine)" if detector == "knn" else "")
                add(f"selfmeta {method} features + {label}", x, y,
                    AnomalyDetector(encoder=encoder, detector=detector, detector_options=options, random_state=seed))
        encoder = SelfSupervised(method="reconstruction", encoder="mlp", epochs=args.epochs, batch_size=128,
                                 random_state=seed).fit(x)
        add("selfmeta reconstruction error", x, y, AnomalyDetector(encoder=encoder, detector="reconstruction"))
        print(json.dumps({"seed": seed, **{k: round(v[-1], 4) for k, v in rows.items()}}), flush=True)
    print(f"\n| detector | AUROC, mean ± std over {args.seeds} draws |")
    print("|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {100 * np.mean(values):.1f} ± {100 * np.std(values):.1f} |")
    print(f"\n{time.perf_counter() - start:.0f} s")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
