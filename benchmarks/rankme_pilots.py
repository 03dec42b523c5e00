"""Do the label-free signals track linear-probe accuracy here? Pilot runs with settings drawn from selfmeta
tune's own search space, each scored without labels (RankMe, alignment and uniformity of the training sample
as the trainer logs them with each pilot's own views; LiDAR, alignment and view retrieval also with the defaults' views,
the same for every pilot, as selfmeta tune measures LiDAR) and with
labels, on validation only: a fixed stratified 20% of the training split (seed 0) scores linear probes fitted
on the other 80% (all their labels, and 10 per class over 5 draws). The pilots train on the whole training
split without labels; the test split is not read.

    python benchmarks/rankme_pilots.py --data ../shared/data/mnist --out runs/rankme-mnist --pilots 20 --seconds 30 \
        [--with-views]

Pilot 0 is the defaults (with the data's view rule); the others draw every searched option at random
(Optuna's RandomSampler, seed 0): the method's temperature, the learning rate factor and the batch size,
and with ``--with-views`` the views' options too. Each trains ``--seconds`` on the training split. Results go to ``OUT/results.jsonl`` (one line a
pilot; a rerun skips the pilots already there); the summary prints Spearman's rho of each signal against
each accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    import optuna
    import torch
    from scipy.stats import spearmanr

    from selfmeta.data import load_data
    from selfmeta.engine import TrainConfig, embed, train
    from selfmeta.engine.model import adapt_views
    from selfmeta.engine.tune import _suggest, search_space, trial_config
    from selfmeta.engine.model import build_method
    from selfmeta.evaluation import few_labels, linear_probe
    from selfmeta.evaluation.quality import QualityProbe
    from sklearn.model_selection import train_test_split

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pilots", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--with-views", action="store_true", help="draw the views' options too (what tune "
                        "searches with a probe score); without it, what tune searches label-free")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.jsonl"
    done = [json.loads(line) for line in results_path.read_text().splitlines()] if results_path.is_file() else []

    train_data = load_data(args.data, "train")
    encoder = args.encoder or train_data.spec.default_encoder
    base = TrainConfig(method=args.method, encoder=encoder, epochs=None, time_budget=args.seconds)
    base, _ = adapt_views(base, train_data)
    space = search_space(base, train_data, set(), args.method, views=args.with_views)
    reference = build_method(base.resolved(len(train_data)), train_data).views   # the defaults' views
    probe = QualityProbe(train_data, seed=base.seed)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    labels = train_data.require_labels().numpy()
    fit, val = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
    for number in range(args.pilots):
        trial = study.ask()
        options = {name: _suggest(trial, name, where) for name, where in space.items()} if number else {}
        study.tell(trial, 0.0)
        if number < len(done):
            continue
        cfg = trial_config(base, options, len(train_data))
        result = train(cfg, train_data, None, progress=False)
        x = embed(result.method.backbone, train_data).numpy()
        measured = probe(result.method, torch.device("cpu"), views=reference)
        row = {"pilot": number, "options": options, "steps": result.steps, **result.quality,
               "lidar_own_views": result.quality["lidar"], "lidar": measured["lidar"],
               "alignment_own_views": result.quality["alignment"], "alignment": measured["alignment"],
               "retrieval_own_views": result.quality["retrieval"], "retrieval": measured["retrieval"],
               "linear_all": linear_probe(x[fit], labels[fit], x[val], labels[val])["accuracy"],
               "linear_few": few_labels(linear_probe, x[fit], labels[fit], x[val], labels[val],
                                        args.labels_per_class)["accuracy"]}
        with open(results_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
        print(json.dumps(row), flush=True)

    print(f"\n{args.data}: {len(done)} pilots of {args.seconds:g} s, {args.method} + {encoder}")
    print("| pilot | steps | RankMe | LiDAR | alignment | uniformity | linear, all labels | linear, 10/class |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in done:
        print(f"| {r['pilot']} | {r['steps']} | {r['rankme']:.1f} | {r['lidar']:.1f} | {r['alignment']:.3f} | "
              f"{r['uniformity']:.3f} | {r['linear_all']:.4f} | {r['linear_few']:.4f} |")
    signals = (("rankme", 1), ("lidar", 1), ("lidar_own_views", 1), ("alignment", -1), ("alignment_own_views", -1),
               ("uniformity", -1), ("retrieval", 1), ("retrieval_own_views", 1))
    for key in ("linear_all", "linear_few"):
        values = np.array([r[key] for r in done])
        for signal, sign in signals:
            rho = spearmanr(sign * np.array([r[signal] for r in done]), values).statistic
            best = max(done, key=lambda r: sign * r[signal])
            print(f"{key}: Spearman rho ({'-' if sign < 0 else ''}{signal}) = {rho:.3f}; its best pilot "
                  f"{best['pilot']} has {best[key]:.4f}")
        print(f"{key}: best pilot {values.max():.4f}, defaults {done[0][key]:.4f}, median {np.median(values):.4f}")


if __name__ == "__main__":
    main()
