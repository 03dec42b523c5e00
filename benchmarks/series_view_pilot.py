"""Choosing the series views without looking at any TEST split: SimCLR pilots on the TRAIN split of a few
UCR problems, each scored by the 5-fold cross-validated accuracy of the UCR protocol's SVM on TRAIN.

    python benchmarks/series_view_pilot.py --out runs/series-pilot [--problems GunPoint ArrowHead OSULeaf]

Each setting trains SimCLR with the ts2vec encoder on TRAIN (no labels) for ``--steps`` steps, embeds TRAIN,
and reports the mean accuracy of an RBF SVM (C chosen inside each fold) over 5 stratified folds of TRAIN.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucr"
SETTINGS = {
    "defaults": {},
    "mild": {"crop": [0.8, 1.0], "time_warp": 0.1, "scaling": 0.05, "magnitude_warp": 0.05, "jitter": 0.05},
    "strong": {"crop": [0.3, 1.0], "time_warp": 0.4, "scaling": 0.2, "magnitude_warp": 0.2, "jitter": 0.2},
    "crop only": {"time_warp": 0.0, "scaling": 0.0, "magnitude_warp": 0.0, "jitter": 0.0},
    "no crop": {"crop": [1.0, 1.0]},
}


def cv_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
    from sklearn.svm import SVC

    from selfmeta.evaluation.protocols import SVM_C, SVM_HARD_MARGIN

    folds = min(5, int(np.unique(labels, return_counts=True)[1].min()))
    inner = GridSearchCV(SVC(gamma="scale"), {"C": [*SVM_C, SVM_HARD_MARGIN]}, cv=max(2, min(3, folds - 1)))
    outer = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(inner, features, labels, cv=outer).mean())


def main() -> None:
    import torch

    from selfmeta.data import load_data
    from selfmeta.engine import TrainConfig, embed, train

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/series-pilot"))
    parser.add_argument("--problems", nargs="*", default=["GunPoint", "ArrowHead", "OSULeaf"])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float]] = {}
    for problem in args.problems:
        data = load_data(SHARED / problem, "train")
        labels = data.y.numpy()
        for name, views in SETTINGS.items():
            cfg = TrainConfig(method="simclr", encoder="ts2vec", steps=args.steps, epochs=None, view_options=views)
            result = train(cfg, data, None, progress=False)
            accuracy = cv_accuracy(embed(result.method.backbone, data).numpy(), labels)
            results.setdefault(name, {})[problem] = accuracy
            print(problem, name, round(accuracy, 3), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| views | " + " | ".join(args.problems) + " | mean |")
    print("|---|" + "---:|" * (len(args.problems) + 1))
    for name, scores in results.items():
        values = [scores[p] for p in args.problems]
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.3f} |")


if __name__ == "__main__":
    main()
