"""Records (issue 14): women's clothing reviews as text, number and category columns; few labels per class.

Data: ``../shared/data/womens-clothing-reviews`` (23,486 reviews). ``split`` writes a fixed split once
(``train.csv``/``test.csv`` in ``--folder``, the ``tablefolder`` layout): the 14 reviews with no
``Department Name`` dropped, 20% test, stratified by department x recommendation, seed 0. Every run
pretrains on the train file without labels and is scored on the test file.

Columns (``--columns``), the same for both targets:
- text: ``Title``, ``Review Text`` (3,810 and 845 missing);
- numbers and categories: ``Age``, ``Positive Feedback Count`` (numbers), ``Clothing ID``, ``Division Name``
  (categories).
Left out: the two targets, and the two columns that restate a target: ``Rating`` (a logistic regression on
it alone reaches 0.937 balanced accuracy on ``Recommended IND`` at 10 labels per class) and ``Class Name``
(a sub-category of its department: one-hot alone gives 0.976 macro F1 on ``Department Name``).

Targets: ``Recommended IND`` (balanced accuracy; the classes are 82/18) and ``Department Name`` (6 classes,
macro F1), with 10 and 50 labels per class drawn from the train file (seeds 0-4), a logistic regression
on standardized frozen features (``linear_probe``), scored on the whole test file.

    python benchmarks/clothing_records.py split
    python benchmarks/clothing_records.py split validation      # the train file split again: settings are chosen here
    python benchmarks/clothing_records.py baseline
    python benchmarks/clothing_records.py pretrain fused --method simclr --budget 540
    python benchmarks/clothing_records.py probe runs/records-fused-simclr fused
    python benchmarks/clothing_records.py adapt runs/records-fused-simclr fused
    python benchmarks/clothing_records.py pretrain fused --method protonet --budget 300   # metric meta-training
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / ".." / "shared" / "data" / "womens-clothing-reviews" / "Womens Clothing E-Commerce Reviews.csv"
FOLDER = Path("/tmp/selfmeta-clothing-records")
TEXT = "Title:text,Review Text:text"
NUMCAT = "Age:number,Positive Feedback Count:number,Clothing ID:category,Division Name:category"
GROUPS = {"fused": f"{TEXT},{NUMCAT}", "text": TEXT, "numcat": NUMCAT}
TARGETS = {"Recommended IND": "recall_macro", "Department Name": "f1_macro"}  # recall_macro = balanced accuracy
LABELS = (10, 50)
SEEDS = 5


def split(folder: Path, validation: bool = False) -> None:
    """The fixed split into ``folder``; with ``validation``, the train file's own split (the same rule) into
    ``folder``-val, where settings are chosen."""
    import pandas as pd

    if validation:
        frame = pd.read_csv(folder / "train.csv", dtype=str, keep_default_na=False, na_values=[""])
        folder = folder.with_name(folder.name + "-val")
    else:
        frame = pd.read_csv(SOURCE, dtype=str, keep_default_na=False, na_values=[""]).drop(columns=["Unnamed: 0"])
        frame = frame[frame["Department Name"].notna()].reset_index(drop=True)
    strata = frame["Department Name"] + "/" + frame["Recommended IND"]
    rng = np.random.default_rng(0)
    test = np.zeros(len(frame), dtype=bool)
    for members in (np.flatnonzero(strata.to_numpy() == s) for s in sorted(strata.unique())):
        test[rng.permutation(members)[: int(round(0.2 * len(members)))]] = True
    folder.mkdir(parents=True, exist_ok=True)
    frame[~test].to_csv(folder / "train.csv", index=False)
    frame[test].to_csv(folder / "test.csv", index=False)
    print(f"{folder}: {int((~test).sum())} train, {int(test.sum())} test reviews")
    if not validation:  # metric meta-training over Class Name: the classes with a 5-shot 5-query episode's 10 items
        classes = folder.with_name(folder.name + "-classes")
        classes.mkdir(exist_ok=True)
        counts = frame[~test]["Class Name"].value_counts()
        kept = frame["Class Name"].isin(counts[counts >= 10].index)
        frame[~test & kept].to_csv(classes / "train.csv", index=False)
        frame[test & kept].to_csv(classes / "test.csv", index=False)
        print(f"{classes}: {int((~test & kept).sum())} train reviews of {int((counts >= 10).sum())} classes")


def draws(y: np.ndarray, k: int) -> list[np.ndarray]:
    from selfmeta.evaluation.protocols import sample_per_class

    return [sample_per_class(y, k, seed) for seed in range(SEEDS)]


def score_features(train_x, train_y, test_x, test_y, metric: str, fit) -> dict[str, list[float]]:
    """``fit(train_x, train_y, test_x, test_y)`` -> scores, for each draw of 10 and 50 labels per class."""
    out = {}
    for k in LABELS:
        scores = [fit(train_x[i], train_y[i], test_x, test_y)[metric] for i in draws(train_y, k)]
        out[f"{k}"] = [float(np.mean(scores)), float(np.std(scores))]
    return out


def source_options(group: str) -> dict:
    """The text group is the text modality (the two columns joined, ``--text-column``): 697 train reviews have
    neither, and a record with no value at all is refused, while an empty document is kept (one [UNK])."""
    return {"text_column": ["Title", "Review Text"]} if group == "text" else {"columns": [GROUPS[group]]}


def load(folder: Path, split_name: str, group: str, target: str):
    from selfmeta.data import load_data

    return load_data(folder, split_name, label_column=target, **source_options(group))


def baseline(folder: Path) -> dict:
    """TF-IDF (word 1-2 grams, min_df 2, sublinear) + one-hot categories + standardized numbers, logistic
    regression; and each group alone."""
    import pandas as pd
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from selfmeta.evaluation.metrics import classification_scores

    frames = {s: pd.read_csv(folder / f"{s}.csv", dtype=str, keep_default_na=False, na_values=[""]) for s in ("train", "test")}

    def text(f):
        return (f["Title"].fillna("") + "\n" + f["Review Text"].fillna("")).to_numpy()

    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=50_000).fit(text(frames["train"]))
    numbers = ["Age", "Positive Feedback Count"]
    scaler = StandardScaler().fit(frames["train"][numbers].astype(float))
    onehot = OneHotEncoder(handle_unknown="ignore").fit(frames["train"][["Clothing ID", "Division Name"]].fillna("?"))
    parts = {s: {"text": tfidf.transform(text(f)),
                 "numcat": sparse.hstack([sparse.csr_matrix(scaler.transform(f[numbers].astype(float))),
                                          onehot.transform(f[["Clothing ID", "Division Name"]].fillna("?"))])}
             for s, f in frames.items()}
    for s in parts:
        parts[s]["fused"] = sparse.hstack([parts[s]["text"], parts[s]["numcat"]])

    def fit(tx, ty, qx, qy):
        return classification_scores(qy, LogisticRegression(max_iter=3000).fit(tx, ty).predict(qx))

    results = {}
    for target, metric in TARGETS.items():
        ys = {s: frames[s][target].to_numpy() for s in frames}
        for group in ("fused", "text", "numcat"):
            train_x, test_x = parts["train"][group].tocsr(), parts["test"][group].tocsr()
            results[f"{target} | {group}"] = score_features(train_x, ys["train"], test_x, ys["test"], metric, fit)
    return results


def pretrain(folder: Path, group: str, method: str, budget: float, out: Path, overrides: list[str]) -> None:
    """``selfmeta pretrain`` without labels; with ``--method protonet`` (or another meta-learner),
    ``selfmeta metatrain`` on 5-way 5-shot episodes of ``Class Name`` (the -classes folder)."""
    from selfmeta.meta import METALEARNERS

    if method in METALEARNERS:
        folder = folder.with_name(folder.name + "-classes")
        command = [sys.executable, "-m", "selfmeta", "metatrain", "--tasks", "labels", "--label-column", "Class Name",
                   "--ways", "5", "--shots", "5", "--queries", "5"]
    else:
        command = [sys.executable, "-m", "selfmeta", "pretrain"]
    if group == "text":
        command += ["--data", str(folder), "--text-column", "Title", "--text-column", "Review Text",
                    "--encoder", "fasttext"]
    else:
        command += ["--data", str(folder), "--columns", GROUPS[group], "--encoder", "fusion"]
    command += ["--method", method, "--out", str(out), "--time-budget", str(budget), "--no-progress", *overrides]
    print("$ " + " ".join(f"'{c}'" if " " in c else c for c in command), flush=True)
    start = time.time()
    subprocess.run(command, check=True)
    print(f"pretrained in {time.time() - start:.0f} s", flush=True)


def features(run: Path, data, part: str | None = None) -> np.ndarray:
    from selfmeta.engine.model import check_compatible, embed, load_backbone

    backbone, description = load_backbone(run)
    return embed(backbone, check_compatible(description, data), part=part).numpy()


def probe(folder: Path, run: Path, group: str, part: str | None = None) -> dict:
    from selfmeta.evaluation.protocols import linear_probe

    results = {}
    for target, metric in TARGETS.items():
        train, test = load(folder, "train", group, target), load(folder, "test", group, target)
        train_x, test_x = features(run, train, part), features(run, test, part)
        results[f"{target} | {run.name}{'/' + part if part else ''}"] = score_features(
            train_x, train.y.numpy(), test_x, test.y.numpy(), metric, linear_probe)
    return results


def adapt(folder: Path, run: Path, group: str) -> dict:
    """Linear probe on frozen features, the Tip-Adapter cache, and fine-tuning the whole backbone, on the
    same draws (the evaluate command's protocols)."""
    from selfmeta.evaluation import adapt as adaptation
    from selfmeta.engine.model import check_compatible, load_backbone

    results = {}
    for target, metric in TARGETS.items():
        train, test = load(folder, "train", group, target), load(folder, "test", group, target)
        backbone, description = load_backbone(run)
        train, test = check_compatible(description, train), check_compatible(description, test)
        for k in LABELS:
            out = adaptation.finetune_probe(backbone, train, test, k, SEEDS)
            results[f"{target} | finetune | {k}"] = [out[metric], out.get(f"{metric}_std", float("nan"))]
        train_x, test_x = features(run, train), features(run, test)
        results[f"{target} | tip"] = score_features(train_x, train.y.numpy(), test_x, test.y.numpy(), metric,
                                                    adaptation.tip_probe)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("split", "baseline", "pretrain", "probe", "adapt"))
    parser.add_argument("args", nargs="*")
    parser.add_argument("--folder", type=Path, default=FOLDER)
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--budget", type=float, default=540.0)
    parser.add_argument("--part", default=None)
    parser.add_argument("--json", type=Path, default=None, help="append the results to this JSON Lines file")
    args, overrides = parser.parse_known_args()
    from selfmeta.runtime import cpu_description

    if args.what == "split":
        return split(args.folder, validation="validation" in args.args)
    if args.what == "baseline":
        result = baseline(args.folder)
    elif args.what == "pretrain":
        group = args.args[0]
        out = Path(args.args[1]) if len(args.args) > 1 else Path(f"runs/records-{group}-{args.method}")
        return pretrain(args.folder, group, args.method, args.budget, out, overrides)
    elif args.what == "probe":
        result = probe(args.folder, Path(args.args[0]), args.args[1], args.part)
    else:
        result = adapt(args.folder, Path(args.args[0]), args.args[1])
    record = {"what": args.what, "args": args.args, "cpu": cpu_description(), "results": result}
    print(json.dumps(record, indent=1))
    if args.json is not None:
        with open(args.json, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    sys.exit(main())
