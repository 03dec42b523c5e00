"""SMS spam with few labels: a linear probe on self-supervised text features against TF-IDF + logistic regression.

The split is the ``lines`` source's fixed stratified 80/20 one (seed 0): 4,460 train, 1,114 test messages
(149 spam). Pretraining reads the train split's text only, no label; the tokenizer is trained on the same
text. Both probes then see the same labelled train messages: 10 per class (5 fixed draws,
``sample_per_class`` seeds 0-4) or all 4,460. Scores on the test split: spam F1 (spam the positive
class) and accuracy.

- TF-IDF: scikit-learn's ``TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)`` fitted on the train
  split's text (no labels), then ``LogisticRegression(C=1, class_weight=None)``.
- selfmeta: the run's frozen features, the ``linear`` protocol's probe (standardized features, logistic
  regression C=1).

    python benchmarks/sms_spam.py --out runs/sms-simclr method=simclr encoder=fasttext time_budget=300
    python benchmarks/sms_spam.py --run runs/sms-simclr          # evaluate an existing run only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from selfmeta.data import load_data
from selfmeta.engine.config import TrainConfig, apply_overrides
from selfmeta.engine.model import check_compatible, embed, load_backbone
from selfmeta.engine.trainer import train
from selfmeta.evaluation.protocols import sample_per_class
from selfmeta.runtime import cpu_description

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sms-spam" / "SMSSpamCollection"


def emit(result: dict, path: str | None) -> None:
    """Print the result as one JSON line, and append it to ``path`` when given."""
    line = json.dumps(result)
    print(line)
    if path:
        with open(path, "a") as handle:
            handle.write(line + "\n")


def scores(y_true: np.ndarray, y_pred: np.ndarray, spam: int) -> dict[str, float]:
    return {"spam_f1": 100 * f1_score(y_true, y_pred, pos_label=spam), "accuracy": 100 * accuracy_score(y_true, y_pred)}


def evaluate(fit_predict, train_y: np.ndarray, test_y: np.ndarray, spam: int, per_class: int, draws: int) -> dict:
    """Mean and std over ``draws`` label draws of ``per_class`` per class, and with every label."""
    runs = [scores(test_y, fit_predict(idx), spam) for idx in
            (sample_per_class(train_y, per_class, seed) for seed in range(draws))]
    out = {f"{k}_{per_class}": float(np.mean([r[k] for r in runs])) for k in runs[0]}
    out.update({f"{k}_{per_class}_std": float(np.std([r[k] for r in runs])) for k in runs[0]})
    out.update({f"{k}_all": v for k, v in scores(test_y, fit_predict(np.arange(len(train_y))), spam).items()})
    return out


def tfidf(train_docs: np.ndarray, test_docs: np.ndarray):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    return vectorizer.fit_transform(train_docs), vectorizer.transform(test_docs)


def probe(train_x, train_y, test_x, scale: bool):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit_predict(idx: np.ndarray) -> np.ndarray:
        model = LogisticRegression(C=1.0, max_iter=2000)
        model = make_pipeline(StandardScaler(), model) if scale else model
        return model.fit(train_x[idx], train_y[idx]).predict(test_x)

    return fit_predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--run", default=None, help="evaluate this run instead of training one")
    parser.add_argument("--out", default=None, help="run directory to train into")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--json", default=None, help="append the result line to this file")
    parser.add_argument("overrides", nargs="*", help="training options, key=value (method=simclr encoder=fasttext ...)")
    args = parser.parse_intermixed_args()
    train_set, test_set = load_data(args.data, "train"), load_data(args.data, "test")
    train_y, test_y = train_set.require_labels().numpy(), test_set.require_labels().numpy()
    spam = train_set.classes.index("spam")
    result: dict = {"cpu": cpu_description(), "train": len(train_set), "test": len(test_set),
                    "test_spam": int((test_y == spam).sum())}
    if args.run is None and args.out is None:
        start = time.perf_counter()
        train_x, test_x = tfidf(train_set.raw, test_set.raw)
        result["tfidf"] = evaluate(probe(train_x, train_y, test_x, scale=False), train_y, test_y, spam,
                                   args.per_class, args.draws)
        result["tfidf"]["seconds"] = round(time.perf_counter() - start, 1)
    else:
        run = args.run
        if run is None:
            cfg = TrainConfig.from_dict(apply_overrides({"time_budget": 300, "epochs": None}, args.overrides))
            trained = train(cfg, train_set, args.out, progress=False)
            run = args.out
            result.update(steps=trained.steps, epochs=round(trained.epochs_done, 2), seconds=round(trained.elapsed, 1),
                          config=" ".join(args.overrides))
        backbone, description = load_backbone(run)
        train_x = embed(backbone, check_compatible(description, train_set)).numpy()
        test_x = embed(backbone, check_compatible(description, test_set)).numpy()
        result["run"] = str(run)
        result["selfmeta"] = evaluate(probe(train_x, train_y, test_x, scale=True), train_y, test_y, spam,
                                      args.per_class, args.draws)
    emit(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
