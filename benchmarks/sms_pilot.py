"""Choosing text settings on validation data: SMS spam, inside the train split only.

The train split (4,460 messages) is cut once more, stratified with seed 1: 80% "fit" (where the 10 labels
per class are drawn, 10 draws) and 20% "validation" (where spam F1 is measured). Pretraining reads the
text of the whole train split, no label; the test split is never read. Each configuration is a list of
key=value training options, one per line of ``--configs`` (or one on the command line).

    python benchmarks/sms_pilot.py --json runs/sms_pilot.jsonl time_budget=60 encoder=fasttext
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
from sklearn.model_selection import train_test_split

from selfmeta.data import load_data
from selfmeta.engine.config import TrainConfig, apply_overrides
from selfmeta.engine.model import check_compatible, embed, load_backbone
from selfmeta.engine.trainer import train
from selfmeta.runtime import cpu_description
from sms_spam import DATA, emit, probe, scores
from selfmeta.evaluation.protocols import sample_per_class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--json", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    data = load_data(args.data, "train")
    y = data.require_labels().numpy()
    fit, val = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=1)
    spam = data.classes.index("spam")
    cfg = TrainConfig.from_dict(apply_overrides({"time_budget": 60, "epochs": None}, args.overrides))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run:
        trained = train(cfg, data, run, progress=False)
        backbone, description = load_backbone(run)
        x = embed(backbone, check_compatible(description, data)).numpy()
    fit_predict = probe(x[fit], y[fit], x[val], scale=True)
    runs = [scores(y[val], fit_predict(sample_per_class(y[fit], 10, seed)), spam) for seed in range(args.draws)]
    result = {"config": " ".join(args.overrides), "cpu": cpu_description(), "steps": trained.steps,
              "val_spam_f1_10": round(float(np.mean([r["spam_f1"] for r in runs])), 2),
              "val_spam_f1_10_std": round(float(np.std([r["spam_f1"] for r in runs])), 2),
              "val_spam_f1_all": round(scores(y[val], fit_predict(np.arange(len(fit))), spam)["spam_f1"], 2),
              "seconds": round(time.perf_counter() - start, 1)}
    emit(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
