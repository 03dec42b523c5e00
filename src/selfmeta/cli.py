"""The ``selfmeta`` command line. Every user error is one line on stderr and exit status 2.

    selfmeta quickstart [--out DIR]
    selfmeta pretrain --data PATH --method simclr --encoder conv4 --out RUN_DIR [--epochs N | --time-budget S]
                      [--columns "Review Text:text,Age:number,Department Name:category,photo:image"]
                      [--only-class NAME] [--config FILE] [key=value ...] [--resume]
    selfmeta metatrain --data PATH [--tasks labels|umtra|cactus|metacontrastive]
                       --method protonet|maml|fomaml|metasgd|reptile|triplet|contrastive
                       --ways N --shots K --queries Q --encoder conv4 --out RUN_DIR [--time-budget S | --steps N]
    selfmeta evaluate RUN_DIR --data PATH [--split test] --protocol linear|knn|cluster [--labels-per-class K]
    selfmeta evaluate RUN_DIR --data PATH --split test --protocol fewshot --ways 5 --shots 1 [--episodes 2000]
    selfmeta evaluate RUN_DIR --data PATH --split test --protocol episode-cluster --ways 20 --shots 5
                      [--adapt prototype|cosine|logreg|finetune]
    selfmeta evaluate RUN_DIR --data PATH --protocol tip|finetune --labels-per-class K [--seeds 5] [steps=50 ...]
    selfmeta evaluate RUN_DIR --data PATH --protocol anomaly --normal-class NAME [--detector knn] [key=value ...]
    selfmeta pretrain --data LOG.csv --user-column U --item-column I --time-column T --method sasrec|cl4srec|duorec
                      --out RUN_DIR [--users warm] [--rating-column R --min-rating 4]
    selfmeta evaluate RUN_DIR --data PATH --protocol ranking [--split val|test]
    selfmeta evaluate RUN_DIR --data PATH --users cold --split all --protocol coldstart --shots 3
                      [--adapt none|finetune|meta] [steps=5 lr=0.1]
    selfmeta recommend RUN_DIR --data PATH --user ID [--k 10] [--include-seen]
    selfmeta detect RUN_DIR --data PATH [--detector NAME] [--split test] --out scores.csv [--threshold T]
                    [--plot FILE.png] [--windows FILE.json] [key=value ...]
    selfmeta nab --data NAB_DIR --detector NAME --out DIR [--encoder RUN_DIR] [key=value ...]
    selfmeta embed RUN_DIR --data PATH --out FILE.npy|FILE.parquet [--part text]
    selfmeta download mnist|cifar10|omniglot [--root DIR]
    selfmeta list
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from selfmeta.data.dataset import SPLITS, Dataset
from selfmeta import distributed
from selfmeta.errors import SelfmetaError

log = logging.getLogger(__name__)


def _data_args(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--data", required=True, help="a path (folder, .zip, .csv, .parquet...) or 'digits'")
    p.add_argument("--format", default=None, help="override format detection (see `selfmeta list`)")
    p.add_argument("--split", default=split, choices=SPLITS, help=f"default: {split}")
    p.add_argument("--label-column", default=None, help="tables, text: the label column (default: label/target/class)")
    p.add_argument("--text-column", action="append", default=None, metavar="NAME",
                   help="tables (CSV, TSV, Parquet, JSON Lines): a text column; repeat it to join several")
    p.add_argument("--columns", action="append", default=None, metavar="NAME:KIND,...",
                   help="records: the columns used and their kinds number|category|text|image|auto; "
                        "repeat or join with commas")
    p.add_argument("--window", type=int, default=None, help="one long series (a timestamped CSV): steps per item")
    p.add_argument("--stride", type=int, default=None, help="one long series: steps between windows (default: --window)")
    p.add_argument("--user-column", default=None, help="interaction logs (CSV, Parquet...): the user ID column")
    p.add_argument("--item-column", default=None, help="interaction logs: the item ID column")
    p.add_argument("--time-column", default=None, help="interaction logs: the timestamp column (numbers)")
    p.add_argument("--rating-column", default=None, help="interaction logs: a rating column (with --min-rating)")
    p.add_argument("--min-rating", type=float, default=None,
                   help="interactions: keep ratings from this value (implicit feedback from explicit ratings)")
    p.add_argument("--users", default=None, choices=("all", "warm", "cold", "coldval"),
                   help="interactions: all users, or the fixed cold-start users (cold: test, coldval: validation, "
                        "a tenth each) or the others (warm)")


# data flags that are options of a source's load
SOURCE_FLAGS = ("label_column", "text_column", "columns", "window", "stride", "user_column", "item_column",
                "time_column", "rating_column", "min_rating", "users")


def _load(args: argparse.Namespace, split: str | None = None):
    from selfmeta.data import load_data

    options = {key: getattr(args, key) for key in SOURCE_FLAGS if getattr(args, key) is not None}
    return load_data(args.data, split or args.split, args.format, **options)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error of the CLI (sub-commands inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _training_args(p: argparse.ArgumentParser, methods: str, encoders: list[str]) -> None:
    _data_args(p, "train")
    p.add_argument("--method", default=None, help=methods)
    from selfmeta.modalities import MODALITIES

    defaults = ", ".join(f"{MODALITIES.get(m).default_encoder} for {m}" for m in MODALITIES)
    p.add_argument("--encoder", default=None, help=f"{' | '.join(encoders)} (default: {defaults})")
    p.add_argument("--out", required=True, help="run directory to create (or to resume)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None)
    length.add_argument("--steps", type=int, default=None, help="optimizer steps")
    length.add_argument("--time-budget", type=float, default=None, help="seconds of training; stops cleanly and saves")
    p.add_argument("--config", default=None, help="JSON (or TOML) file of options")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="options, e.g. lr=1e-3 method.temperature=0.5")


def _episode_args(p: argparse.ArgumentParser, queries: int) -> None:
    p.add_argument("--ways", type=int, default=None, help="N classes per episode (default: 5)")
    p.add_argument("--shots", type=int, default=None, help="K labelled items per class (default: 1)")
    p.add_argument("--queries", type=int, default=None, help=f"Q items to classify per class (default: {queries})")


def build_parser() -> argparse.ArgumentParser:
    from selfmeta.anomaly import DETECTORS
    from selfmeta.data.tasks import TASKS
    from selfmeta.encoders import ENCODERS
    from selfmeta.meta import METALEARNERS
    from selfmeta.methods import METHODS

    stream = stream_detectors()
    parser = _Parser(prog="selfmeta", description="Learn features from unlabeled data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("quickstart", help="train on the bundled digits and compare with raw pixels")
    p.add_argument("--out", default=None, help="run directory (default: runs/quickstart-<time>)")
    p.add_argument("--epochs", type=int, default=None, help="override the quickstart's training length")

    p = sub.add_parser("pretrain", help="self-supervised pretraining", epilog="key=value examples: lr=1e-3 "
                       "batch_size=128 method.temperature=0.5 views.hflip=0 encoder.width=32 precision=bf16")
    _training_args(p, f"{' | '.join(METHODS.names())} (default: simclr)", ENCODERS.names())
    p.add_argument("--only-class", default=None, metavar="NAME", help="train on the items of class NAME only (the "
                   "one-class protocol of anomaly detection: no other label is read); the run records it")

    p = sub.add_parser("metatrain", help="episodic meta-training, on labelled classes or tasks built without labels",
                       epilog="key=value examples: lr=1e-3 method.inner_steps=5 method.distance=cosine "
                       "tasks.encoder=runs/simclr tasks.clusters=500")
    _training_args(p, f"{' | '.join(METALEARNERS.names())} (default: protonet)", ENCODERS.names())
    p.add_argument("--tasks", default=None, help=f"where episodes come from: {' | '.join(TASKS.names())} "
                   "(default: labels; the others ignore the data's labels)")
    _episode_args(p, queries=15)
    p.add_argument("--tasks-per-step", type=int, default=None, help="episodes per step and process (default: 32)")

    p = sub.add_parser("tune", help="choose the settings on your data within a time budget (short pilots scored by "
                       "RankMe, or by a few labels), then train the best for the rest of it",
                       epilog="options given as key=value are kept as they are and not searched")
    _data_args(p, "train")
    p.add_argument("--method", default=None, help="the method (default: the search chooses among "
                   "simclr, moco, barlow and vicreg); with --tasks, a meta-learner (default: protonet)")
    p.add_argument("--encoder", default=None, help=f"{' | '.join(ENCODERS.names())} (default: the modality's)")
    p.add_argument("--out", required=True, help="run directory to create: the winner's run, with the trials in config.json")
    p.add_argument("--time-budget", type=float, required=True, help="seconds in all: the search, then the winner")
    p.add_argument("--search-share", type=float, default=0.4, help="part of the budget spent searching (default: 0.4)")
    p.add_argument("--trials", type=int, default=None, help="a fixed number of pilots instead of the search time")
    p.add_argument("--pilot-items", type=int, default=None, help="items each pilot trains on (default: each pilot "
                   "trains for a sixth of the search time); with --trials, a search reproducible from its seed")
    p.add_argument("--search", action="append", default=[], metavar="NAME=LOW:HIGH", help="your own range for an "
                   "option (NAME=LOW:HIGH, NAME=LOW:HIGH:log or NAME=A,B,C; e.g. method.temperature=0.1:0.5); repeat it. "
                   "A label-free score leaves the views at the data's defaults: name views.* ranges here to search "
                   "them anyway (--labels-per-class searches them)")
    p.add_argument("--score", default="retrieval", choices=("retrieval", "alignment", "lidar", "rankme"),
                   help="the label-free score of a pilot: how often an item's second view is found from its first "
                   "among 1,024 items, both drawn with the defaults' views for every pilot (default), the "
                   "alignment of the two views or LiDAR with those views, or RankMe")
    p.add_argument("--labels-per-class", type=int, default=None, help="score pilots by a linear probe on K labels per "
                   "class of --val-split (the rest of that split scores it) instead of a label-free signal")
    p.add_argument("--val-split", default=None, choices=SPLITS, help="the labelled split for --labels-per-class")
    p.add_argument("--tasks", default=None, help=f"tune episodic meta-training: {' | '.join(TASKS.names())}")
    _episode_args(p, queries=15)
    p.add_argument("--tasks-per-step", type=int, default=None, help="with --tasks: episodes per step (default: 32)")
    p.add_argument("--config", default=None, help="JSON (or TOML) file of options (kept, not searched)")
    p.add_argument("--no-progress", action="store_true", help="no line per pilot")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="options kept as given, e.g. encoder.width=32")

    p = sub.add_parser("evaluate", help="score frozen features: the probe fits the train split, scores --split")
    p.add_argument("run_dir")
    _data_args(p, "test")
    p.add_argument("--protocol", required=True, help="linear | knn | svm | cluster | fewshot | episode-cluster (each "
                   "episode's --ways x --shots items clustered with no label shown; Hungarian accuracy and NMI) | anomaly | tip (a "
                   "Tip-Adapter cache on frozen features) | finetune (the whole backbone fine-tuned on the labels) | "
                   "ranking (interactions: HR@10 and NDCG@10 of each user's next item, full and against 100 sampled "
                   "items) | coldstart (interactions: each user seen through their first --shots items, default 3, "
                   "scored on the next --queries, default 10) | quality (no labels: RankMe, LiDAR, alignment, uniformity "
                   "and view retrieval of the split's features); tip and finetune need --labels-per-class")
    p.add_argument("--labels-per-class", type=int, default=None, help="fit the probe on K labels per class")
    p.add_argument("--seeds", type=int, default=5, help="label draws averaged with --labels-per-class")
    _episode_args(p, queries=15)
    p.add_argument("--episodes", type=int, default=2000, help="fewshot: episodes drawn with a fixed seed")
    p.add_argument("--adapt", default="prototype", help="fewshot: prototype | cosine | logreg | finetune (a "
                   "meta-learner's own adaptation, e.g. MAML's inner loop; a head fine-tuned on frozen features otherwise); "
                   "coldstart: none | finetune (steps=N lr=R on the user's state) | meta (a coldstart run's learned "
                   "steps; its default)")
    p.add_argument("--normal-class", default=None, metavar="NAME", help="anomaly: the detector fits the train split's "
                   "items of class NAME; the test split's items of that class are normal, the others anomalies")
    p.add_argument("--detector", default=None, help=f"anomaly: {' | '.join(DETECTORS.names())} (default: knn)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="anomaly: options of the detector (k=10 "
                   "metric=euclidean) or of its threshold (contamination=0.05, fpr=0.01); finetune: steps=50 "
                   "lr=1e-4 head_lr=1e-2 weight_decay=0.01 batch_size=32")

    p = sub.add_parser("detect", help="score items or one long series for anomalies; write scores.csv and a plot",
                       epilog="Items (images, tables, series items): the detector fits the train split, taken as "
                       "mostly normal (labels are ignored), and scores --split; a row is flagged when its score is "
                       "above the threshold (default: the contamination rule, contamination=0.1). One long series "
                       "(a CSV whose first column is timestamp, without --window): scored online by a stream "
                       "detector, whole; a row is flagged when its score is at least the threshold (default: the "
                       "detector's own), never in the probationary period.")
    p.add_argument("run_dir")
    _data_args(p, "test")
    p.add_argument("--detector", default=None, help=f"items: {' | '.join(DETECTORS.names())} (default: knn); one long "
                   f"series: {' | '.join(stream.names())} (default: {DEFAULT_STREAM_DETECTOR})")
    p.add_argument("--out", required=True, help="FILE.csv: index,score,flagged[,label] per item, or "
                   "timestamp,value,score,flagged per row of a series")
    p.add_argument("--threshold", type=float, default=None, help="flag from this score on (see below)")
    p.add_argument("--plot", default=None, help="FILE.png (series: default the --out path with .png; items: only "
                   "when given, a histogram of the scores)")
    p.add_argument("--windows", default=None, help="series: a JSON list of [start, end] timestamp pairs to shade "
                   "(found by itself for a series of a NAB folder)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="options of the detector (k=10; window=600) "
                   "or, for items, of the threshold (contamination=0.05, fpr=0.01)")

    p = sub.add_parser("nab", help="run a stream detector online over the NAB corpus and score it as NAB v1.1 does")
    p.add_argument("--data", required=True, help="a NAB folder: data/<group>/<series>.csv and "
                   "labels/combined_windows.json")
    p.add_argument("--detector", required=True, help=" | ".join(stream.names()))
    p.add_argument("--out", required=True, help="results folder: <group>/<detector>_<series>.csv (NAB's layout) and "
                   "results.json")
    p.add_argument("--encoder", default=None, metavar="RUN_DIR", help="a run of selfmeta pretrain on series, for the "
                   "detectors on learned features")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="options of the detector (window=600)")

    p = sub.add_parser("topics", help="cluster documents by their features; name each cluster by its top words "
                       "(c-TF-IDF) and write them with its size and example texts")
    p.add_argument("run_dir")
    _data_args(p, "all")
    p.add_argument("--clusters", type=int, required=True, metavar="K", help="number of clusters (k-means)")
    p.add_argument("--out", required=True, help="FILE.json")
    p.add_argument("--top", type=int, default=10, help="words per topic (default: 10)")
    p.add_argument("--examples", type=int, default=3, help="example texts per topic, nearest its centre (default: 3)")

    p = sub.add_parser("recommend", help="interactions: the k items a user is most likely to take next, with scores")
    p.add_argument("run_dir")
    _data_args(p, "all")
    p.add_argument("--user", required=True, help="the user's ID, as the data writes it")
    p.add_argument("--k", type=int, default=10, help="items to list (default: 10)")
    p.add_argument("--include-seen", action="store_true", help="also list items the user already has")

    p = sub.add_parser("embed", help="write the features of a data set to .npy or .parquet")
    p.add_argument("run_dir")
    _data_args(p, "all")
    p.add_argument("--out", required=True, help="FILE.npy or FILE.parquet")
    p.add_argument("--part", default=None, help="records: one column kind's own embedding before fusion "
                   "(number, category, text, image) instead of the fused features")

    p = sub.add_parser("download", help="download a data set from its official address (checksummed)")
    p.add_argument("name", help="mnist | cifar10 | omniglot")
    p.add_argument("--root", default=None, help="cache folder (default: $SELFMETA_CACHE or ~/.cache/selfmeta)")

    sub.add_parser("list", help="data formats, encoders, methods, protocols, detectors")
    return parser


def cmd_pretrain(args: argparse.Namespace) -> None:
    _train_command(args, None)


def cmd_metatrain(args: argparse.Namespace) -> None:
    given = {"tasks": args.tasks, "ways": args.ways, "shots": args.shots, "queries": args.queries,
             "tasks_per_step": args.tasks_per_step}
    _train_command(args, {k: v for k, v in given.items() if v is not None})


def _train_command(args: argparse.Namespace, episode: dict | None) -> None:
    """pretrain (``episode`` None) and metatrain (``episode``: the episode flags given on the command line)."""
    from selfmeta.data.source import fingerprint
    from selfmeta.engine.config import TrainConfig, read_config_file, resolve_options
    from selfmeta.engine.trainer import CONFIG, train

    out = Path(args.out)
    saved = {}
    if args.resume and (out / CONFIG).is_file():
        try:
            saved = json.loads((out / CONFIG).read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            raise SelfmetaError(f"--resume: {out / CONFIG} is unreadable; it is not a selfmeta run") from None
    flags = {}
    if episode is not None:
        flags.update({"method": "protonet", "tasks": "labels"} if not saved else {}, **episode)
    flags.update({key: getattr(args, key) for key in ("method", "encoder") if getattr(args, key) is not None})
    # --epochs, --steps or --time-budget on the command line sets the run's length alone.
    for key in ("epochs", "steps", "time_budget"):
        if getattr(args, key) is not None:
            flags.update(epochs=None, steps=None, time_budget=None)
            flags[key] = getattr(args, key)
    config_file = read_config_file(args.config) if args.config else {}
    values = resolve_options(saved, config_file, flags, args.overrides)
    data = _load(args)
    info = {**fingerprint(args.data), "format": args.format, "split": args.split,
            **{key: getattr(args, key) for key in SOURCE_FLAGS}}
    if hasattr(args, "only_class"):  # pretrain: recorded, so that --resume compares it with the run's
        info["only_class"] = args.only_class
        if args.only_class is not None:
            total = len(data)
            data = of_class(data, args.only_class, "--only-class", args.split)
            log.info("--only-class %s: training on %d of the %d items of the %s split", args.only_class,
                        len(data), total, args.split)
    values.setdefault("encoder", data.spec.default_encoder)
    cfg = TrainConfig.from_dict(values)
    result = train(cfg, data, out, resume=args.resume, progress=not args.no_progress, data_info=info)
    if distributed.launched_rank() != 0:  # under torchrun one summary is enough (the group is ended)
        return
    print(json.dumps({"run_dir": str(out), "steps": result.steps, "epochs": round(result.epochs_done, 3),
                      "seconds": round(result.elapsed, 1), "stopped_by": result.stopped_by,
                      "final_loss": result.history[-1]["loss"] if result.history else None,
                      **result.quality}))


def cmd_tune(args: argparse.Namespace) -> None:
    from selfmeta.data.source import fingerprint
    from selfmeta.engine.config import TrainConfig, read_config_file, resolve_options
    from selfmeta.engine.checkpoint import CHECKPOINT
    from selfmeta.engine.trainer import prepare_run_dir
    from selfmeta.engine.tune import METHODS as SEARCHED_METHODS, Trial, parse_search, tune
    from selfmeta.methods import METHODS

    if args.trials is not None and args.trials < 1 or args.pilot_items is not None and args.pilot_items < 1:
        raise SelfmetaError("--trials and --pilot-items take a whole number >= 1")
    if args.time_budget <= 0:
        raise SelfmetaError(f"--time-budget takes a number of seconds > 0, got {args.time_budget:g}")
    if (args.labels_per_class is None) != (args.val_split is None):
        raise SelfmetaError("--labels-per-class and --val-split go together: the probe draws K labels per class "
                            "from the split you name")
    if args.val_split == args.split:
        raise SelfmetaError(f"--val-split {args.val_split} is the split the pilots train on; name another")
    config_file = read_config_file(args.config) if args.config else {}
    flags: dict = {"epochs": None, "time_budget": args.time_budget}
    if args.tasks is not None:
        flags.update(tasks=args.tasks, method="protonet", **{k: getattr(args, k) for k in (
            "ways", "shots", "queries", "tasks_per_step") if getattr(args, k) is not None})
    elif any(getattr(args, k) is not None for k in ("ways", "shots", "queries", "tasks_per_step")):
        raise SelfmetaError("--ways, --shots, --queries and --tasks-per-step are for episodic tuning (--tasks)")
    flags.update({key: getattr(args, key) for key in ("method", "encoder") if getattr(args, key) is not None})
    values = resolve_options({}, config_file, flags, args.overrides)
    fixed = {key.partition("=")[0] for key in args.overrides} | _nested_keys(config_file)
    data = _load(args)
    values.setdefault("encoder", data.spec.default_encoder)
    cfg = TrainConfig.from_dict(values)
    methods = None
    if args.method is None and args.tasks is None and "method" not in config_file:
        methods = tuple(m for m in SEARCHED_METHODS if METHODS.get(m).takes(data.modality))
    space = parse_search(args.search, cfg, data)
    val = _load(args, args.val_split) if args.val_split else None
    info = {**fingerprint(args.data), "format": args.format, "split": args.split,
            **{key: getattr(args, key) for key in SOURCE_FLAGS}}
    out = Path(args.out)
    if (out / CHECKPOINT).is_file():  # refused before the search, not after it (tune has no --resume)
        raise SelfmetaError(f"{out} already holds a run ({CHECKPOINT}); choose another --out")
    prepare_run_dir(out, False, cfg, {})

    def report(trial: Trial) -> None:
        if not args.no_progress:
            options = " ".join(f"{k}={json.dumps(v)}" for k, v in trial.options.items()) or "(the defaults)"
            score = "-" if trial.score is None else f"{trial.score:.4g}"
            print(f"trial {trial.number}: {trial.state}, score {score} after {trial.steps} steps, "
                  f"{trial.seconds:.0f} s: {options}", file=sys.stderr, flush=True)

    tuned = tune(cfg, data, args.time_budget, out, fixed=fixed, methods=methods, space=space, signal=args.score, val=val,
                 labels_per_class=args.labels_per_class, search_share=args.search_share, trials=args.trials,
                 pilot_items=args.pilot_items, progress=False, data_info=info, report=report)
    result = tuned.result
    print(json.dumps({"run_dir": str(out), "score": tuned.score, "trials": len(tuned.trials),
                      "winner": tuned.best.number, "winner_options": tuned.best.options,
                      "winner_score": tuned.best.score, "search_seconds": round(tuned.search_seconds, 1),
                      "steps": result.steps, "seconds": round(result.elapsed, 1), **result.quality}))


def _nested_keys(values: dict) -> set[str]:
    """The options a --config file sets, by the names a user types (``views.rotation``, ``lr``)."""
    from selfmeta.engine.config import GROUPS

    prefixes = {field: prefix for prefix, field in GROUPS.items()}
    keys = set()
    for key, value in values.items():
        if key in prefixes and isinstance(value, dict):
            keys |= {f"{prefixes[key]}.{k}" for k in value}
        else:
            keys.add(key)
    return keys


def _features(run_dir: str, data, part: str | None = None) -> np.ndarray:
    from selfmeta.engine.model import check_compatible, embed, load_backbone

    backbone, description = load_backbone(run_dir)
    return embed(backbone, check_compatible(description, data), part=part).numpy()


# --- anomaly detection: one-class selection, detectors from key=value options, detect and nab ----------------

DEFAULT_STREAM_DETECTOR = "memory"   # online detector on a run's learned features (selfmeta.anomaly.learned)
ESTIMATOR_OPTIONS = ("contamination", "fpr", "holdout", "random_state")  # AnomalyDetector's threshold options


def stream_detectors():
    """``STREAM_DETECTORS``, every online series detector registered (the package imports them all)."""
    from selfmeta.anomaly import STREAM_DETECTORS

    return STREAM_DETECTORS


def class_index(data: Dataset, name: str, flag: str) -> int:
    """The index of class ``name`` in ``data.classes``, or one error line listing a few valid names."""
    if data.y is None:
        raise SelfmetaError(f"{flag} {name}: {data.name} has no labels, and {flag} selects the items of one labelled "
                            "class (give --label-column for a table)")
    if name not in data.classes:
        shown = ", ".join(data.classes[:8]) + (f", ... ({len(data.classes)} in all)" if len(data.classes) > 8 else "")
        raise SelfmetaError(f"{flag} {name!r}: {data.name} has no such class; its classes: {shown}")
    return data.classes.index(name)


def of_class(data: Dataset, name: str, flag: str, split: str) -> Dataset:
    """The items of class ``name`` only (the one-class protocol)."""
    index = np.flatnonzero(data.y.numpy() == class_index(data, name, flag)) if data.y is not None else None
    if index is None or len(index) == 0:
        class_index(data, name, flag)  # no labels: its error
        raise SelfmetaError(f"{flag} {name!r}: the {split} split of {data.name} holds no item of that class")
    return data.subset(index)


def key_values(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` words -> {key: value}, values parsed as JSON where they parse (``k=10`` -> 10)."""
    from selfmeta.engine.config import parse_value

    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise SelfmetaError(f"expected a key=value option, got {pair!r}")
        out[key.strip()] = parse_value(text)
    return out


def item_detector(run_dir: str, name: str, pairs: list[str]):
    """An unfitted ``AnomalyDetector(encoder=run_dir, detector=name)`` with its options checked now, before any
    data is read: each ``key=value`` is an option of the detector or, for contamination, fpr, holdout and
    random_state, of the estimator's threshold."""
    from selfmeta.anomaly import DETECTORS, AnomalyDetector
    from selfmeta.options import check_options, declared_options

    cls = DETECTORS.get(name)
    values = key_values(pairs)
    own = {k: v for k, v in values.items() if k in ESTIMATOR_OPTIONS}
    options = {k: v for k, v in values.items() if k not in ESTIMATOR_OPTIONS}
    declared = declared_options(cls)
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise SelfmetaError(f"unknown option {unknown[0]!r} for detector {name!r}; valid: "
                            f"{', '.join([*declared, *ESTIMATOR_OPTIONS])}")
    options = check_options(f"detector {name!r}", cls, options)
    own = check_options(f"detector {name!r}", AnomalyDetector, own, AnomalyDetector.built)
    return AnomalyDetector(encoder=run_dir, detector=name, detector_options=options, **own)


def check_run(run_dir: str, data: Dataset) -> dict[str, Any]:
    """The run's description, checked against ``data``: one error line for a run of another modality or item
    shape."""
    from selfmeta.engine.model import check_compatible, load_backbone

    _, description = load_backbone(run_dir)
    check_compatible(description, data)
    return description


def stream_detector(name: str, pairs: list[str], encoder: str | None, needs_encoder_flag: str | None):
    """(class, keyword arguments) of stream detector ``name``, its options checked; ``encoder`` (a run
    directory) is passed where the class takes one. ``needs_encoder_flag``: the flag that gives the encoder
    (``--encoder``), for the errors of a detector that needs one or does not take one; None where the run
    is always given."""
    from selfmeta.options import check_options

    cls = stream_detectors().get(name)
    kwargs = check_options(f"stream detector {name!r}", cls, key_values(pairs), ("encoder",))
    parameter = inspect.signature(cls).parameters.get("encoder")
    if parameter is None:
        if encoder is not None and needs_encoder_flag is not None:
            raise SelfmetaError(f"{needs_encoder_flag} does not apply to stream detector {name!r}: it learns no "
                                "features")
    elif encoder is not None:
        kwargs["encoder"] = encoder
    elif parameter.default is inspect.Parameter.empty:
        raise SelfmetaError(f"stream detector {name!r} scores learned features: give {needs_encoder_flag} RUN_DIR "
                            "(a run of selfmeta pretrain on series)")
    return cls, kwargs


def online_scores(detector, values: np.ndarray, probation: int, what: str) -> np.ndarray:
    """(n,) float64 scores of a stream detector on values (n, C), checked."""
    scores = np.asarray(detector.score(values, probation), dtype=np.float64)
    if scores.shape != (len(values),) or not np.isfinite(scores).all():
        raise SelfmetaError(f"{what}: the detector returned {scores.shape} scores for {len(values)} rows, or "
                            "scores that are not finite numbers")
    return scores


def time_strings(timestamps: np.ndarray) -> np.ndarray:
    """datetime64 -> NAB's ``2014-04-01 00:00:00`` text (sub-second digits only where present)."""
    import pandas as pd

    return pd.DatetimeIndex(timestamps).astype(str).to_numpy()


def _anomaly(args: argparse.Namespace, test: Dataset) -> dict:
    """evaluate --protocol anomaly: fit on the train split's items of the normal class, rank the test split."""
    import time

    from selfmeta.evaluation.metrics import detection_scores

    if args.normal_class is None:
        raise SelfmetaError("--protocol anomaly needs --normal-class NAME: the class whose items are normal")
    name = args.detector or "knn"
    model = item_detector(args.run_dir, name, args.overrides)
    normal_index = class_index(test, args.normal_class, "--normal-class")
    is_anomaly = test.require_labels().numpy() != normal_index                  # (N,) the positive class
    if not is_anomaly.any():
        raise SelfmetaError(f"the {args.split} split holds only items of class {args.normal_class!r}: there is no "
                            "anomaly to rank (AUROC needs both kinds)")
    if is_anomaly.all():
        raise SelfmetaError(f"the {args.split} split holds no item of class {args.normal_class!r}: there is no normal "
                            "item to rank (AUROC needs both kinds)")
    train = _load(args, "train")
    check_run(args.run_dir, train)
    normal = of_class(train, args.normal_class, "--normal-class", "train")
    start = time.perf_counter()
    model.fit(normal.as_input())
    scores = model.decision_function(test.as_input())                            # (N,) higher = more anomalous
    return {"protocol": "anomaly", "normal_class": args.normal_class, "detector": name,
            "detector_options": model.detector_options, **detection_scores(is_anomaly, scores),
            "train_items": len(normal), "normal": int((~is_anomaly).sum()), "anomalies": int(is_anomaly.sum()),
            "seconds": round(time.perf_counter() - start, 2)}


def _fewshot(args: argparse.Namespace, test) -> dict:
    import time

    import torch

    from selfmeta.data.episodes import EpisodeSpec
    from selfmeta.engine.model import check_compatible, load_backbone, load_learner
    from selfmeta.evaluation.fewshot import (
        ADAPTATIONS, EVAL_SEED, episode_accuracy, fewshot_episodes, learner_episode_accuracy, summarize,
    )

    if args.adapt not in ADAPTATIONS:
        raise SelfmetaError(f"unknown adaptation {args.adapt!r}; valid: {', '.join(ADAPTATIONS)}")
    spec = EpisodeSpec(*(default if given is None else given for given, default in
                         ((args.ways, 5), (args.shots, 1), (args.queries, 15))))
    if spec.queries < 1:  # (an episode without queries is one to cluster: --protocol episode-cluster)
        raise SelfmetaError(f"queries must be an integer >= 1, got {spec.queries}")
    start = time.perf_counter()
    episodes = fewshot_episodes(test.require_labels(), spec, args.episodes)
    _, description = load_backbone(args.run_dir)
    test = check_compatible(description, test)
    learner = load_learner(args.run_dir, test) if args.adapt == "finetune" else None
    if learner is not None:  # the meta-learner's own adaptation, on raw items
        torch.manual_seed(EVAL_SEED)  # an adaptation that draws (hypernet's weight samples) repeats exactly

        def items(index):
            return test.spec.to_model(test.take(index), "cpu")

        accuracy = learner_episode_accuracy(learner.adapt_predict, items, episodes, spec.shots)
        how = f"{description['method']} adaptation"
    else:
        accuracy = episode_accuracy(torch.from_numpy(_features(args.run_dir, test)), episodes, spec.shots, args.adapt)
        how = args.adapt
    return {"protocol": "fewshot", "ways": spec.ways, "shots": spec.shots, "queries": spec.queries,
            "episodes": args.episodes, "adapt": args.adapt, "adaptation": how, **summarize(accuracy),
            "seconds": round(time.perf_counter() - start, 2)}


def _episode_cluster(args: argparse.Namespace, test) -> dict:
    """evaluate --protocol episode-cluster: each episode's N x K items grouped into N clusters, no label shown."""
    import time

    import torch

    from selfmeta.data.episodes import EpisodeSpec
    from selfmeta.engine.model import check_compatible, load_backbone, load_learner
    from selfmeta.evaluation.episode_cluster import (
        kmeans_episodes, learner_cluster_episodes, score_clusters, summarize_scores,
    )
    from selfmeta.evaluation.fewshot import fewshot_episodes

    how = {"prototype": "k-means", "cosine": "k-means on normalized features", "balanced": "balanced k-means"}
    if args.adapt not in (*how, "finetune"):
        raise SelfmetaError(f"--protocol episode-cluster takes --adapt prototype (k-means on the features), cosine "
                            f"(k-means on normalized features), balanced (equal-size clusters) or finetune (the "
                            f"run's own clustering), not {args.adapt!r}")
    if args.queries is not None:
        raise SelfmetaError("--protocol episode-cluster clusters --shots items per class and has no queries")
    spec = EpisodeSpec(args.ways or 5, args.shots or 5, 0)
    start = time.perf_counter()
    episodes = fewshot_episodes(test.require_labels(), spec, args.episodes)     # (E, N, K)
    _, description = load_backbone(args.run_dir)
    test = check_compatible(description, test)
    if args.adapt == "finetune":
        learner = load_learner(args.run_dir, test)
        if learner is None or not hasattr(learner, "cluster_items"):
            raise SelfmetaError(f"--adapt finetune uses the run's own clustering, and {args.run_dir} has none (a "
                                "metacluster run does); --adapt prototype clusters its features with k-means")

        def items(index):
            return test.spec.to_model(test.take(index), "cpu")

        clusters = learner_cluster_episodes(learner.cluster_items, items, episodes)
        how = f"{description['method']} clustering"
    else:
        features = torch.from_numpy(_features(args.run_dir, test))
        clusters = kmeans_episodes(features, episodes, args.adapt)
        how = how[args.adapt]
    return {"protocol": "episode-cluster", "ways": spec.ways, "shots": spec.shots, "episodes": args.episodes,
            "adapt": args.adapt, "clustering": how, **summarize_scores(score_clusters(clusters, spec.ways)),
            "seconds": round(time.perf_counter() - start, 2)}


def _coldstart(args: argparse.Namespace, test: Dataset) -> dict:
    """evaluate --protocol coldstart: each user of --split seen through their first --shots items; popularity from
    the warm users."""
    import torch

    from selfmeta.data import load_data
    from selfmeta.engine.model import check_compatible, load_backbone, load_method
    from selfmeta.evaluation.coldstart import cold_start_report
    from selfmeta.evaluation.ranking import sequence_encoder

    shots, queries = args.shots or 3, args.queries or 10
    if shots < 1 or queries < 1:
        raise SelfmetaError("--shots and --queries must be at least 1")
    backbone, description = load_backbone(args.run_dir)
    sequence_encoder(backbone)                       # a run that scores items from users' histories
    test = check_compatible(description, test)      # its modality, prepared by the run's item vocabulary
    vocabulary = test.preprocessor
    method = load_method(args.run_dir, test)
    learned = hasattr(method, "rates")              # a run whose method learned its adaptation (coldstart)
    adapt = args.adapt if args.adapt != "prototype" else "meta" if learned else "none"
    options = {"steps": 5, "lr": 0.1, **key_values(args.overrides)}
    unknown = sorted(set(options) - {"steps", "lr"})
    if unknown or not isinstance(options["steps"], int) or options["steps"] < 0 or not float(options["lr"]) > 0:
        raise SelfmetaError("--protocol coldstart takes steps=N (0 or more) and lr=RATE (above 0)"
                            + (f"; not {', '.join(unknown)}" if unknown else ""))
    steps, lr = options["steps"], float(options["lr"])
    if adapt == "meta":
        if not learned:
            raise SelfmetaError(f"--adapt meta needs a run of the coldstart method; {args.run_dir} is "
                                f"{description['method']}")
        steps, lr = method.steps, method.rates.detach()
    options = {k: getattr(args, k) for k in SOURCE_FLAGS if getattr(args, k) is not None and k != "users"}
    warm = load_data(args.data, "all", args.format, users="warm", **options)
    counts = torch.bincount(torch.from_numpy(vocabulary.encode(np.concatenate(list(warm.raw)))),
                            minlength=vocabulary.num_ids)
    return cold_start_report(backbone, vocabulary, test.raw, shots, queries, adapt, steps, lr, counts)


def _quality(run_dir: str, data: Dataset) -> dict:
    """The label-free signals of a run's features on ``data`` (its views for alignment), as training logs them."""
    import torch

    from selfmeta.engine.model import check_compatible, load_backbone, load_method
    from selfmeta.evaluation.quality import QualityProbe

    method = load_method(run_dir, data)  # raw data: it prepares its own copy
    data = check_compatible(load_backbone(run_dir)[1], data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    probe = QualityProbe(data, size=min(len(data), 4096))
    return {"protocol": "quality", "items": len(probe.index), **probe(method.to(device), device)}


def cmd_evaluate(args: argparse.Namespace) -> None:
    from selfmeta.files import atomic_write
    from selfmeta.evaluation import ADAPT_PROTOCOLS, PROTOCOLS, run_protocol

    protocols = (*PROTOCOLS, "fewshot", "episode-cluster", "anomaly", *ADAPT_PROTOCOLS, "ranking", "coldstart",
                 "quality")
    if args.protocol not in protocols:
        raise SelfmetaError(f"unknown protocol {args.protocol!r}; valid: {', '.join(protocols)}")
    if args.protocol != "anomaly" and (args.normal_class or args.detector) or args.overrides and args.protocol not in (
            "anomaly", "finetune", "coldstart"):
        given = "--normal-class" if args.normal_class else "--detector" if args.detector else args.overrides[0]
        raise SelfmetaError(f"{given} is for --protocol anomaly"
                            f"{'' if given.startswith('--') else ', finetune or coldstart'}, not {args.protocol}")
    if args.protocol in ADAPT_PROTOCOLS and args.labels_per_class is None:
        raise SelfmetaError(f"--protocol {args.protocol} needs --labels-per-class K: it adapts to K labelled items "
                            "per class, drawn --seeds times")
    if args.protocol == "finetune":  # its options checked before any data is read
        from selfmeta.evaluation.adapt import check_finetune_options

        finetune_options = check_finetune_options(key_values(args.overrides))
    run_dir = Path(args.run_dir)
    if run_dir.is_dir() and not os.access(run_dir, os.W_OK):  # say so before the work, not after it
        raise SelfmetaError(f"{run_dir} is not writable: evaluate writes its result to {run_dir / 'metrics.json'}")
    test = _load(args)
    if args.protocol == "fewshot":
        result = _fewshot(args, test)
    elif args.protocol == "episode-cluster":
        result = _episode_cluster(args, test)
    elif args.protocol == "anomaly":
        result = _anomaly(args, test)
    elif args.protocol == "ranking":
        from selfmeta.engine.model import check_compatible, load_backbone
        from selfmeta.evaluation.ranking import ranking_report

        backbone, description = load_backbone(args.run_dir)
        train = check_compatible(description, _load(args, "train"))
        result = ranking_report(backbone, train, check_compatible(description, test))
    elif args.protocol == "coldstart":
        result = _coldstart(args, test)
    elif args.protocol == "quality":
        result = _quality(args.run_dir, test)
    elif args.protocol == "tip":
        from selfmeta.evaluation import run_tip

        train = _load(args, "train")
        result = run_tip(_features(args.run_dir, train), train.require_labels().numpy(), _features(args.run_dir, test),
                         test.require_labels().numpy(), args.labels_per_class, args.seeds)
    elif args.protocol == "finetune":
        import torch

        from selfmeta.engine.model import check_compatible, load_backbone
        from selfmeta.evaluation import finetune_probe

        backbone, description = load_backbone(args.run_dir)
        train = check_compatible(description, _load(args, "train"))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        result = {"protocol": "finetune", **finetune_probe(backbone, train, check_compatible(description, test),
                                                           args.labels_per_class, args.seeds, device, **finetune_options),
                  "finetune_options": finetune_options}
    else:
        test_y = test.require_labels().numpy()
        train_x = train_y = None
        if args.protocol != "cluster":
            train = _load(args, "train")
            train_y = train.require_labels().numpy()
            train_x = _features(args.run_dir, train)
        test_x = _features(args.run_dir, test)
        result = run_protocol(args.protocol, train_x, train_y, test_x, test_y, args.labels_per_class, args.seeds)
        documents = test.spec.documents(test.raw)
        if args.protocol == "cluster" and documents is not None:  # text: name the clusters by their top words
            from selfmeta.evaluation import cluster_assignments
            from selfmeta.evaluation.topics import describe_topics

            clusters = cluster_assignments(test_x, len(np.unique(test_y)))
            result["topics"] = describe_topics(documents, clusters, test_x, examples=0)
    result = {**result, "split": args.split, "data": str(args.data)}
    text = json.dumps(result)
    print(text)  # first: a failure to write below still leaves the result on screen
    if run_dir.is_dir():  # (a .safetensors file as RUN_DIR has no folder to write into)
        atomic_write(run_dir / "metrics.json", lambda tmp: tmp.write_text(text + "\n"))
        history = run_dir / "evaluations.jsonl"
        previous = history.read_text() if history.is_file() else ""
        atomic_write(history, lambda tmp: tmp.write_text(previous + text + "\n"))


def cmd_embed(args: argparse.Namespace) -> None:
    from selfmeta.files import atomic_write

    out = Path(args.out)
    if out.suffix not in (".npy", ".parquet"):
        raise SelfmetaError(f"--out must end in .npy or .parquet, got {out.name}")
    data = _load(args)
    features = _features(args.run_dir, data, args.part)
    if out.suffix == ".npy":
        atomic_write(out, lambda tmp: np.save(open(tmp, "wb"), features))
    else:
        import pandas as pd

        frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(features.shape[1])])
        if data.y is not None:
            frame["label"] = [data.classes[i] for i in data.y.tolist()]
        atomic_write(out, lambda tmp: frame.to_parquet(tmp))
    print(json.dumps({"out": str(out), "items": int(features.shape[0]), "features": int(features.shape[1])}))


def cmd_recommend(args: argparse.Namespace) -> None:
    """The k best next items for one user of the data, from the whole of their history."""
    from selfmeta.engine.model import check_compatible, load_backbone
    from selfmeta.evaluation.ranking import recommend

    if args.k < 1:
        raise SelfmetaError(f"--k must be at least 1, got {args.k}")
    backbone, description = load_backbone(args.run_dir)
    data = _load(args)
    if data.keys is None:
        raise SelfmetaError(f"{args.data}: recommend needs interaction data with user IDs (a MovieLens folder, or a "
                            "log with --user-column, --item-column and --time-column)")
    found = np.flatnonzero(data.keys == str(args.user))
    if len(found) == 0:
        raise SelfmetaError(f"user {args.user!r} does not exist in {args.data} (its {len(data.keys)} users are "
                            f"{', '.join(data.keys[:3])}, ...)")
    data = check_compatible(description, data.subset(found[:1]))
    ids, scores = recommend(backbone, data, args.k, exclude_seen=not args.include_seen)
    vocabulary = data.preprocessor
    info = data.info or {}
    items = []
    for index, score in zip(ids[0].tolist(), scores[0].tolist()):
        if not np.isfinite(score):  # fewer items left than --k
            break
        item = vocabulary.item_id(index)
        items.append({"item": item, "score": round(score, 4), **info.get(item, {})})
    print(json.dumps({"user": str(args.user), "history": len(data.raw[0]), "items": items}))


def cmd_topics(args: argparse.Namespace) -> None:
    from selfmeta.evaluation import cluster_assignments, clustering_scores
    from selfmeta.evaluation.topics import describe_topics
    from selfmeta.files import atomic_write

    out = Path(args.out)
    if out.suffix != ".json":
        raise SelfmetaError(f"--out must end in .json, got {out.name}")
    if args.top < 1 or args.examples < 0:
        raise SelfmetaError("--top must be at least 1 and --examples at least 0")
    data = _load(args)
    documents = data.spec.documents(data.raw)
    if documents is None:
        raise SelfmetaError(f"topics need documents (text data); {args.data} holds {data.modality} data")
    features = _features(args.run_dir, data)
    clusters = cluster_assignments(features, args.clusters)
    topics = describe_topics(documents, clusters, features, args.top, args.examples)
    result = {"data": str(args.data), "split": args.split, "clusters": args.clusters, "documents": len(data),
              "topics": topics}
    if data.y is not None:  # how the clusters agree with the labels the data happens to have
        result["against_labels"] = clustering_scores(data.y.numpy(), clusters)
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n",
                                                 encoding="utf-8"))
    print(json.dumps({"out": str(out), "documents": len(data), "clusters": len(topics),
                      **({"against_labels": result["against_labels"]} if data.y is not None else {})}))


def cmd_detect(args: argparse.Namespace) -> None:
    from selfmeta.data.sources.series import is_timestamped_csv

    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise SelfmetaError(f"--out must end in .csv, got {out.name}")
    if args.plot is not None and Path(args.plot).suffix.lower() != ".png":
        raise SelfmetaError(f"--plot must end in .png, got {Path(args.plot).name}")
    if args.threshold is not None and not np.isfinite(args.threshold):
        raise SelfmetaError(f"--threshold must be a finite number, got {args.threshold}")
    one_series = args.format in (None, "windows") and args.window is None and is_timestamped_csv(Path(args.data))
    if one_series:
        summary = _detect_series(args, out, Path(args.plot) if args.plot else out.with_suffix(".png"))
    else:
        if args.windows is not None:
            raise SelfmetaError("--windows is for one long series (a timestamped CSV scored online)")
        summary = _detect_items(args, out, Path(args.plot) if args.plot else None)
    print(json.dumps(summary))


def _detect_items(args: argparse.Namespace, out: Path, plot: Path | None) -> dict:
    """Fit on the train split (taken as mostly normal, labels ignored), score --split, flag above the threshold."""
    import pandas as pd

    from selfmeta.evaluation.detection import plot_item_scores
    from selfmeta.files import atomic_write

    name = args.detector or "knn"
    model = item_detector(args.run_dir, name, args.overrides)
    data = _load(args)
    check_run(args.run_dir, data)
    model.fit(_load(args, "train").as_input())
    scores = model.decision_function(data.as_input())                            # (N,) higher = more anomalous
    threshold = model.threshold_ if args.threshold is None else float(args.threshold)
    flagged = scores > threshold                                                # PyOD's rule, as predict()
    frame = pd.DataFrame({"index": np.arange(len(data)), "score": scores, "flagged": flagged.astype(np.int64)})
    labels = None if data.y is None else [data.classes[i] for i in data.y.tolist()]
    if labels is not None:
        frame["label"] = labels
    atomic_write(out, lambda tmp: frame.to_csv(tmp, index=False))
    if plot is not None:
        plot_item_scores(plot, scores, threshold, labels, f"{data.name} ({args.split} split): detector {name}, "
                         f"{int(flagged.sum())} of {len(data)} items flagged")
    return {"out": str(out), "plot": str(plot) if plot else None, "detector": name, "split": args.split,
            "items": len(data), "flagged": int(flagged.sum()), "threshold": threshold}


def _detect_series(args: argparse.Namespace, out: Path, plot: Path) -> dict:
    """Score one long series online with a stream detector; the scores table and its plot."""
    import csv

    import pandas as pd

    from selfmeta.anomaly.nab import as_stored, probation_length
    from selfmeta.data.sources.series import read_timestamped, series_dataset
    from selfmeta.evaluation.detection import nab_windows, plot_series, read_windows
    from selfmeta.files import atomic_write

    name = args.detector or DEFAULT_STREAM_DETECTOR
    cls, kwargs = stream_detector(name, args.overrides, args.run_dir, None)
    path = Path(args.data)
    timestamps, values = read_timestamped(path)                                 # (n,) datetime64, (n, C)
    check_run(args.run_dir, series_dataset(values.T[None], path.name))        # one item (1, C, n)
    with open(path, newline="", encoding="utf-8") as handle:
        names = next(csv.reader(handle))[1:]
    windows = read_windows(args.windows) if args.windows else nab_windows(path)
    probation = probation_length(len(values))
    scores = online_scores(cls(**kwargs), values, probation, f"stream detector {name!r}")
    threshold = cls.threshold if args.threshold is None else float(args.threshold)
    # NAB's rule: a detection is a score at least the threshold, compared as NAB stores scores (12 significant
    # digits, so that the windowed Gaussian's 1.0 is reached from 7.1 deviations on); probation is not scored.
    flagged = (as_stored(scores) >= threshold) & (np.arange(len(values)) >= probation)
    frame = pd.DataFrame({"timestamp": time_strings(timestamps)})
    for c, column in enumerate(names):
        frame[column] = values[:, c]
    frame["score"], frame["flagged"] = scores, flagged.astype(np.int64)
    atomic_write(out, lambda tmp: frame.to_csv(tmp, index=False))
    plot_series(plot, timestamps, values, names, scores, threshold, flagged, probation, windows,
                f"{path.name}: stream detector {name}, {int(flagged.sum())} of {len(values)} rows flagged "
                f"(score >= {threshold:g})")
    return {"out": str(out), "plot": str(plot), "detector": name, "rows": len(values), "probation": probation,
            "flagged": int(flagged.sum()), "threshold": threshold, "windows": None if windows is None else len(windows)}


def cmd_nab(args: argparse.Namespace) -> None:
    import time

    import pandas as pd

    from selfmeta.anomaly.nab import cross_threshold, read_corpus, score_corpus
    from selfmeta.data.sources.series import series_dataset
    from selfmeta.files import atomic_write

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SelfmetaError(f"--out {out} is a file; nab writes a folder of results (choose another --out)")
    cls, kwargs = stream_detector(args.detector, args.overrides, args.encoder, "--encoder")
    corpus = read_corpus(args.data)
    if args.encoder is not None:
        check_run(args.encoder, series_dataset(corpus[0].values[None, None], corpus[0].name))  # (1, 1, n)
    detector = cls(**kwargs)
    scores, per_series, seconds = [], [], 0.0
    for series in corpus:
        start = time.perf_counter()
        scores.append(online_scores(detector, series.values[:, None], series.probation,
                                    f"stream detector {args.detector!r} on {series.name}"))
        spent = time.perf_counter() - start
        seconds += spent
        per_series.append({"name": series.name, "rows": len(series.values), "seconds": round(spent, 4)})
        log.info("%s: %d rows in %.2f s", series.name, len(series.values), spent)
    for series, score in zip(corpus, scores):  # NAB's results layout: <group>/<detector>_<file>.csv
        name = Path(series.name)
        frame = pd.DataFrame({"timestamp": time_strings(series.timestamps), "value": series.values,
                              "anomaly_score": score})
        atomic_write(out / name.parent / f"{args.detector}_{name.name}",
                     lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
    profiles = score_corpus(corpus, scores)
    crossed = cross_threshold(corpus, scores)
    points = sum(len(s.values) for s in corpus)

    def finite(x: float) -> float | None:  # +inf (nothing detected is best) is no JSON number
        return x if np.isfinite(x) else None

    summary = {"detector": args.detector, **{p: round(v["score"], 3) for p, v in profiles.items()},
               "thresholds": {p: finite(v["threshold"]) for p, v in profiles.items()},
               "cross_threshold": {p: round(v, 3) for p, v in crossed.items()}, "points": points,
               "seconds": round(seconds, 3), "points_per_second": round(points / max(seconds, 1e-9), 1)}
    record = {**summary, "options": {k: v for k, v in kwargs.items() if k != "encoder"}, "encoder": args.encoder,
              "data": str(args.data),
              "profiles": {p: {k: finite(x) for k, x in v.items()} for p, v in profiles.items()},
              "cross_threshold": crossed, "series": per_series}
    atomic_write(out / "results.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    print(json.dumps(summary))


def cmd_download(args: argparse.Namespace) -> None:
    from selfmeta.data.download import DOWNLOADERS

    if args.name not in DOWNLOADERS:
        raise SelfmetaError(f"unknown data set {args.name!r}; valid: {', '.join(DOWNLOADERS)}")
    print(DOWNLOADERS[args.name](Path(args.root) if args.root else None))


def cmd_list(args: argparse.Namespace) -> None:
    from selfmeta.anomaly import DETECTORS
    from selfmeta.data import SOURCES
    from selfmeta.data.tasks import TASK_ARGS, TASKS
    from selfmeta.modalities import MODALITIES, VIEW_ARGS
    from selfmeta.encoders import ENCODERS
    from selfmeta.engine.config import TrainConfig
    from selfmeta.evaluation import PROTOCOLS
    from selfmeta.evaluation.fewshot import ADAPTATIONS
    from selfmeta.meta import METALEARNERS
    from selfmeta.methods import BUILT_BY_ENGINE, METHODS
    from selfmeta.options import describe_options

    STREAM_DETECTORS = stream_detectors()
    w = 2 + max(len(n) for n in [*SOURCES, *ENCODERS, *METHODS, *METALEARNERS, *TASKS, *DETECTORS,
                                 *STREAM_DETECTORS])
    pad = " " * (2 + w)

    def entry(name: str, text: str, option_lines: list[str], paper: str = "") -> None:
        print(f"  {name:{w}s}{text}")
        for line in option_lines:
            print(f"{pad}  {line}")
        if paper:
            print(f"{pad}paper: {paper}")

    print("data formats:")
    for name in SOURCES:
        entry(name, SOURCES.get(name).description, [])
    print("training options (key=value, or a --config file):")
    for line in describe_options(TrainConfig):
        print(f"  {line}")
    print("modalities, with their views (views.NAME=VALUE) and preprocessor (input.NAME=VALUE):")
    for name in MODALITIES:
        modality = MODALITIES.get(name)
        pre = modality.preprocessor
        entry(name, f"{modality.description}; default encoder {modality.default_encoder}",
              [f"views: {modality.views.description}"]
              + describe_options(modality.views, (*VIEW_ARGS, *modality.views.inputs))
              + ([f"input: the {pre.kind}, fitted on the training split, saved in the run ({pre.file})"]
                 + describe_options(pre) if pre else []))
    print("encoders (encoder.NAME=VALUE):")
    for name in ENCODERS:
        cls = ENCODERS.get(name)
        entry(name, cls.description, describe_options(cls, ("input_shape", *cls.inputs)))
    for title, registry in (("methods (selfmeta pretrain; method.NAME=VALUE)", METHODS),
                            ("meta-learners (selfmeta metatrain; method.NAME=VALUE)", METALEARNERS)):
        print(f"{title}:")
        for name in registry:
            cls = registry.get(name)
            entry(name, cls.description, describe_options(cls, BUILT_BY_ENGINE), cls.paper)
    print("task constructors (selfmeta metatrain --tasks; tasks.NAME=VALUE):")
    for name in TASKS:
        cls = TASKS.get(name)
        entry(name, cls.description, describe_options(cls, TASK_ARGS), cls.paper)
    print("evaluation protocols:\n  " + ", ".join((*PROTOCOLS, "fewshot", "episode-cluster", "anomaly", "tip",
                                              "finetune", "ranking", "coldstart")))
    print("few-shot adaptations (--adapt):\n  " + ", ".join(ADAPTATIONS))
    print("anomaly detectors on items (evaluate --protocol anomaly, detect; NAME=VALUE; the threshold takes "
          f"{', '.join(ESTIMATOR_OPTIONS)}):")
    for name in DETECTORS:
        cls = DETECTORS.get(name)
        entry(name, cls.description, describe_options(cls))
    print("stream detectors on one long series (detect, nab; NAME=VALUE):")
    for name in STREAM_DETECTORS:
        cls = STREAM_DETECTORS.get(name)
        entry(name, f"{_summary(cls)}; flags from {cls.threshold:g}", describe_options(cls, ("encoder",)))


def _summary(cls: type) -> str:
    """A plug-in's one-line description: its ``description``, else its docstring's first sentence without the
    parenthesized asides."""
    import re

    if getattr(cls, "description", ""):
        return cls.description
    first = " ".join((cls.__doc__ or "").split()).split(". ")[0].rstrip(".")
    return " ".join(re.sub(r"\s*\([^()]*\)", "", first).split())


def cmd_quickstart(args: argparse.Namespace) -> None:
    from selfmeta.quickstart import run_quickstart

    run_quickstart(Path(args.out) if args.out else None, epochs=args.epochs)


COMMANDS = {"pretrain": cmd_pretrain, "metatrain": cmd_metatrain, "tune": cmd_tune, "evaluate": cmd_evaluate, "embed": cmd_embed,
            "topics": cmd_topics, "recommend": cmd_recommend, "detect": cmd_detect, "nab": cmd_nab, "download": cmd_download, "list": cmd_list,
            "quickstart": cmd_quickstart}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting positionals at the first flag: take key=value options wherever they stand.
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    from selfmeta.runtime import tune_allocator

    tune_allocator()  # glibc keeps freed blocks: far less time in the kernel (selfmeta.runtime)
    try:
        COMMANDS[args.command](args)
    except SelfmetaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
