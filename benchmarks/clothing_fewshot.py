"""Few-shot text classes: 5-way 1-shot and 5-shot episodes over new clothing classes, from review text.

Data: ``../shared/data/womens-clothing-reviews``; a review is its Title and Review Text joined (the CSV
source's ``--text-column Title --text-column "Review Text"``), its class the ``Class Name``. The classes are
split once into 10 train and 8 test classes, listed in ``benchmarks/clothing_classes.json`` (the 18 classes
with at least 100 reviews). Everything learned sees train-class reviews only; the episodes (1000, 15
queries per class, the evaluation's fixed seed) are drawn from the test-class reviews.

- ``tfidf``: TF-IDF of word 1-2 grams (20,000 most frequent, fitted on the train-class reviews, no labels);
  nearest prototype.
- ``simclr`` (or any method): self-supervised pretraining on the train-class reviews without labels; frozen
  features, nearest prototype.
- ``protonet``: ProtoNet meta-trained on episodes of the train classes (their labels).
- ``umtra``: ProtoNet meta-trained on UMTRA tasks built from the train-class reviews without labels.

    python benchmarks/clothing_fewshot.py tfidf
    python benchmarks/clothing_fewshot.py simclr --out runs/clothing-simclr encoder=fasttext time_budget=300
    python benchmarks/clothing_fewshot.py protonet --out runs/clothing-protonet encoder=fasttext shots=5 time_budget=300
    python benchmarks/clothing_fewshot.py umtra --out runs/clothing-umtra encoder=fasttext time_budget=300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from selfmeta.data.dataset import Dataset, labels_from_names
from selfmeta.data.episodes import EpisodeSpec
from selfmeta.data.sources.text import documents_from_columns
from selfmeta.engine.config import TrainConfig, apply_overrides
from selfmeta.engine.model import check_compatible, embed, load_backbone
from selfmeta.engine.trainer import train
from selfmeta.evaluation.fewshot import episode_accuracy, fewshot_episodes, summarize
from selfmeta.runtime import cpu_description
from sms_spam import emit

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / ".." / "shared" / "data" / "womens-clothing-reviews" / "Womens Clothing E-Commerce Reviews.csv"
SPLIT = HERE / "clothing_classes.json"
EPISODES = 1000


def reviews(path: Path, classes: list[str], name: str) -> Dataset:
    """The reviews of ``classes`` as a raw text Dataset (labels: their classes)."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = frame[frame["Class Name"].isin(classes)]
    documents = np.empty(len(frame), dtype=object)
    documents[:] = documents_from_columns(frame, ["Title", "Review Text"], path)
    y, names = labels_from_names(list(frame["Class Name"]), sorted(classes))
    return Dataset(None, y, names, "text", name, documents)


def accuracies(features: torch.Tensor, labels: torch.Tensor) -> dict:
    out = {}
    for shots in (1, 5):
        spec = EpisodeSpec(5, shots, 15)
        episodes = fewshot_episodes(labels, spec, EPISODES)
        result = summarize(episode_accuracy(features, episodes, shots, "prototype"))
        out[f"{shots}shot"] = round(100 * result["accuracy"], 2)
        out[f"{shots}shot_ci95"] = round(100 * result["ci95"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", help="tfidf, a method (simclr...), protonet or umtra")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=None, help="run directory to train into")
    parser.add_argument("--run", default=None, help="evaluate this run instead of training one")
    parser.add_argument("--json", default=None, help="append the result line to this file")
    parser.add_argument("overrides", nargs="*", help="training options, key=value")
    args = parser.parse_intermixed_args()
    split = json.loads(SPLIT.read_text())
    train_set, test_set = reviews(Path(args.data), split["train"], "train classes"), reviews(Path(args.data), split["test"], "test classes")
    result: dict = {"what": args.what, "cpu": cpu_description(), "train_reviews": len(train_set),
                    "test_reviews": len(test_set), "episodes": EPISODES}
    start = time.perf_counter()
    if args.what == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=20_000).fit(train_set.raw)
        features = torch.from_numpy(vectorizer.transform(test_set.raw).astype(np.float32).toarray())
    else:
        run = args.run
        if run is None:
            values = {"time_budget": 300, "epochs": None, "encoder": "fasttext"}
            if args.what in ("protonet", "umtra"):
                values.update(method="protonet", tasks="labels" if args.what == "protonet" else "umtra",
                              steps=None, ways=5, shots=1, queries=5 if args.what == "protonet" else 1)
            else:
                values["method"] = args.what
            cfg = TrainConfig.from_dict(apply_overrides(values, args.overrides))
            data = train_set if cfg.tasks == "labels" else Dataset(None, None, [], "text", "train classes", train_set.raw)
            trained = train(cfg, data, args.out, progress=False)
            run = args.out
            result.update(steps=trained.steps, train_seconds=round(trained.elapsed, 1), config=" ".join(args.overrides))
        backbone, description = load_backbone(run)
        features = embed(backbone, check_compatible(description, test_set))
        result["run"] = str(run)
    result.update(accuracies(features, test_set.require_labels()))
    result["seconds"] = round(time.perf_counter() - start, 1)
    emit(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
