"""One-class MNIST: for each digit, learn features without labels on that digit's training images only, fit
a detector on them, and score the whole test set (the digit normal, the nine others anomalies); AUROC per
digit and the mean, beside the raw-pixel kNN detector and published means (Deep SVDD, Ruff et al. ICML 2018:
94.8; GEOM, Golan & El-Yaniv NeurIPS 2018: 98.0).

    python benchmarks/oneclass_mnist.py --out runs/oneclass [--method simclr] [--budget 110] [--digits 0 1 ...]

Each digit is the two commands a user types, on one thread:

    selfmeta pretrain --data ../shared/data/mnist --only-class D --method simclr --encoder conv4 --time-budget 110 --out RUN
    selfmeta evaluate RUN --data ../shared/data/mnist --protocol anomaly --normal-class D --detector knn

Writes ``results.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
PUBLISHED = {"Deep SVDD": 94.8, "GEOM": 98.0}


def run(cmd: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def raw_pixel_auroc(digit: int, metric: str = "cosine") -> float:
    """The same kNN detector (k = 5) on the raw pixels, fitted on the digit's training images."""
    import torch
    from sklearn.metrics import roc_auc_score

    from selfmeta.anomaly import AnomalyDetector
    from selfmeta.data import load_data

    torch.set_num_threads(1)
    train, test = load_data(str(MNIST), "train"), load_data(str(MNIST), "test")
    x_train = train.take(torch.arange(len(train))).numpy()
    x_test = test.take(torch.arange(len(test))).numpy()
    normal = x_train[train.y.numpy() == digit]
    detector = AnomalyDetector(detector="knn", detector_options={"metric": metric}).fit(normal)
    return float(roc_auc_score(test.y.numpy() != digit, detector.decision_function(x_test)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--encoder", default="conv4")
    parser.add_argument("--detector", default="knn")
    parser.add_argument("--budget", type=float, default=110.0, help="seconds of pretraining per digit")
    parser.add_argument("--digits", type=int, nargs="*", default=list(range(10)))
    args = parser.parse_args()
    if not MNIST.is_dir():
        sys.exit(f"{MNIST} is missing")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for digit in args.digits:
        run_dir = out / f"{args.method}-digit{digit}"
        start = time.perf_counter()
        train = json.loads(run([sys.executable, "-m", "selfmeta", "pretrain", "--data", str(MNIST), "--only-class",
                                str(digit), "--method", args.method, "--encoder", args.encoder, "--time-budget",
                                str(args.budget), "--out", str(run_dir), "--no-progress"]))
        scored = json.loads(run([sys.executable, "-m", "selfmeta", "evaluate", str(run_dir), "--data", str(MNIST),
                                 "--protocol", "anomaly", "--normal-class", str(digit), "--detector", args.detector]))
        results[digit] = {"auroc": scored["auroc"], "auprc": scored["auprc"], "raw_auroc": raw_pixel_auroc(digit),
                          "train_seconds": train["seconds"], "steps": train["steps"],
                          "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps({"digit": digit, **results[digit]}), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\n| digit | {args.method} + {args.detector} AUROC | raw-pixel kNN AUROC | pretraining s (steps) |")
    print("|---|---|---|---|")
    for digit, r in results.items():
        print(f"| {digit} | {100 * r['auroc']:.1f} | {100 * r['raw_auroc']:.1f} | {r['train_seconds']:.0f} ({r['steps']}) |")
    mean = 100 * np.mean([r["auroc"] for r in results.values()])
    raw = 100 * np.mean([r["raw_auroc"] for r in results.values()])
    print(f"| mean | **{mean:.1f}** | {raw:.1f} | |")
    print("published means: " + ", ".join(f"{k} {v}" for k, v in PUBLISHED.items()))


if __name__ == "__main__":
    main()
