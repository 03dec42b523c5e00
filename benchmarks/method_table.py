"""The Markdown table of a method comparison: steps and images/s from the summary that ``selfmeta pretrain``
printed into ``RUN.train.log`` (images/s = steps x batch / seconds of training, per-epoch work such as
DeepCluster's k-means included), frozen-feature scores from ``RUN.eval.log`` (benchmarks/frozen_features.py);
both logs lie beside the run directory (see mnist_methods.sh).

    python benchmarks/method_table.py runs/mnist10/*/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    print("| method | steps (epochs) | seconds | images/s | linear, all labels | linear, 10/class (5 draws) "
          "| kNN k=20 | k-means NMI |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for run in map(Path, sys.argv[1:]):
        train_log, eval_log = (run.parent / f"{run.name}.{kind}.log" for kind in ("train", "eval"))
        if not train_log.is_file() or not eval_log.is_file():
            continue
        summary = json.loads(train_log.read_text().strip().splitlines()[-1])
        batch = json.loads((run / "config.json").read_text())["config"]["batch_size"]
        row = json.loads(eval_log.read_text().strip().splitlines()[-1])[-1]
        print(f"| {run.name} | {summary['steps']} ({summary['epochs']:.1f}) | {summary['seconds']:.0f} | {summary['steps'] * batch / summary['seconds']:.0f} | "
              f"{100 * row['linear_all']:.2f}% | {100 * row['linear_few']:.2f}% ± {100 * row['linear_few_std']:.2f} | "
              f"{100 * row['knn_all']:.2f}% | {row['nmi']:.3f} |")


if __name__ == "__main__":
    main()
