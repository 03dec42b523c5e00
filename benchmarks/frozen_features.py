"""Frozen-feature evaluation of a pretrained run beside raw pixels and PCA, as a Markdown table.

For each of: raw pixels, PCA fitted on the unlabeled train images, the run's encoder features:
linear probe with all labels, linear probe with K labels per class (mean and std over 5 draws),
weighted kNN (k=20) with all labels, k-means NMI on the scored split.

    python benchmarks/frozen_features.py RUN_DIR --data ../shared/data/mnist [--labels-per-class 10]
    python benchmarks/frozen_features.py RUN_DIR --data ../shared/data/mnist --validation

``--validation`` never looks at the test split: it fits on train[:-10000] and scores train[-10000:]
(used to choose settings); without it the probes fit the train split and score the test split.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.decomposition import PCA

from selfmeta.data import load_data
from selfmeta.encoders import to_unit
from selfmeta.engine.model import embed, load_backbone
from selfmeta.evaluation import run_protocol


def evaluate(name: str, train_x, train_y, test_x, test_y, k: int) -> dict:
    t0 = time.perf_counter()
    row = {
        "features": name,
        "dim": int(train_x.shape[1]),
        "linear_all": run_protocol("linear", train_x, train_y, test_x, test_y)["accuracy"],
    }
    few = run_protocol("linear", train_x, train_y, test_x, test_y, labels_per_class=k, seeds=5)
    row.update(linear_few=few["accuracy"], linear_few_std=few["accuracy_std"])
    row["knn_all"] = run_protocol("knn", train_x, train_y, test_x, test_y)["accuracy"]
    row["nmi"] = run_protocol("cluster", train_x, train_y, test_x, test_y)["nmi"]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", nargs="?", default=None, help="a selfmeta run (omit for the baselines only)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--validation", action="store_true", help="score train[-10000:] instead of the test split")
    parser.add_argument("--pca", type=int, default=64, help="PCA components (64 = Conv-4's feature size)")
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()

    train = load_data(args.data, "train")
    if args.validation:
        test, train = train.subset(np.arange(len(train) - 10_000, len(train))), train.subset(np.arange(len(train) - 10_000))
    else:
        test = load_data(args.data, "test")
    train_y, test_y = train.y.numpy(), test.y.numpy()
    k = args.labels_per_class
    rows = []
    if not args.no_baselines:
        pixels = [to_unit(d.x).flatten(1).numpy() for d in (train, test)]
        rows.append(evaluate("raw pixels" if train.modality == "image" else "raw features", pixels[0], train_y, pixels[1], test_y, k))
        pca = PCA(min(args.pca, pixels[0].shape[1]), random_state=0).fit(pixels[0])   # unlabeled train items only
        rows.append(evaluate(f"PCA-{pca.n_components_} (fit on unlabeled train)", pca.transform(pixels[0]), train_y,
                             pca.transform(pixels[1]), test_y, k))
    if args.run_dir:
        backbone, description = load_backbone(args.run_dir)
        feats = [embed(backbone, d).numpy() for d in (train, test)]
        rows.append(evaluate(f"selfmeta {description['method']} {description['encoder']}", feats[0], train_y,
                             feats[1], test_y, k))
    split = "validation (train[-10000:])" if args.validation else "test"
    print(f"scored on the {split} split; probes fit on {len(train)} train items\n")
    print(f"| features | dim | linear, all labels | linear, {k}/class (5 draws) | kNN k=20, all labels | k-means NMI |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['features']} | {r['dim']} | {100 * r['linear_all']:.2f}% | {100 * r['linear_few']:.2f}% "
              f"± {100 * r['linear_few_std']:.2f} | {100 * r['knn_all']:.2f}% | {r['nmi']:.3f} |")
    print("\n" + json.dumps(rows))


if __name__ == "__main__":
    main()
