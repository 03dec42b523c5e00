"""The ``selfmeta`` command line. Every user error is one line on stderr and exit status 2.

    selfmeta quickstart [--out DIR]
    selfmeta pretrain --data PATH --method simclr --encoder conv4 --out RUN_DIR [--epochs N | --time-budget S]
                      [--config FILE] [key=value ...] [--resume]
    selfmeta metatrain --data PATH [--tasks labels|umtra|cactus|metacontrastive]
                       --method protonet|maml|fomaml|metasgd|reptile|triplet|contrastive
                       --ways N --shots K --queries Q --encoder conv4 --out RUN_DIR [--time-budget S | --steps N]
    selfmeta evaluate RUN_DIR --data PATH [--split test] --protocol linear|knn|cluster [--labels-per-class K]
    selfmeta evaluate RUN_DIR --data PATH --split test --protocol fewshot --ways 5 --shots 1 [--episodes 2000]
                      [--adapt prototype|cosine|logreg|finetune]
    selfmeta embed RUN_DIR --data PATH --out FILE.npy|FILE.parquet
    selfmeta download mnist|cifar10|omniglot [--root DIR]
    selfmeta list
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np

from selfmeta.data.dataset import SPLITS
from selfmeta import distributed
from selfmeta.errors import SelfmetaError


def _data_args(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("--data", required=True, help="a path (folder, .zip, .csv, .parquet...) or 'digits'")
    p.add_argument("--format", default=None, help="override format detection (see `selfmeta list`)")
    p.add_argument("--split", default=split, choices=SPLITS, help=f"default: {split}")
    p.add_argument("--label-column", default=None, help="tables: the label column (default: label/target/class)")
    p.add_argument("--window", type=int, default=None, help="one long series (a timestamped CSV): steps per item")
    p.add_argument("--stride", type=int, default=None, help="one long series: steps between windows (default: --window)")


SOURCE_FLAGS = ("label_column", "window", "stride")  # data flags that are options of a source's load


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
    from selfmeta.data.tasks import TASKS
    from selfmeta.encoders import ENCODERS
    from selfmeta.meta import METALEARNERS
    from selfmeta.methods import METHODS

    parser = _Parser(prog="selfmeta", description="Learn features from unlabeled data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("quickstart", help="train on the bundled digits and compare with raw pixels")
    p.add_argument("--out", default=None, help="run directory (default: runs/quickstart-<time>)")
    p.add_argument("--epochs", type=int, default=None, help="override the quickstart's training length")

    p = sub.add_parser("pretrain", help="self-supervised pretraining", epilog="key=value examples: lr=1e-3 "
                       "batch_size=128 method.temperature=0.5 views.hflip=0 encoder.width=32 precision=bf16")
    _training_args(p, f"{' | '.join(METHODS.names())} (default: simclr)", ENCODERS.names())

    p = sub.add_parser("metatrain", help="episodic meta-training, on labelled classes or tasks built without labels",
                       epilog="key=value examples: lr=1e-3 method.inner_steps=5 method.distance=cosine "
                       "tasks.encoder=runs/simclr tasks.clusters=500")
    _training_args(p, f"{' | '.join(METALEARNERS.names())} (default: protonet)", ENCODERS.names())
    p.add_argument("--tasks", default=None, help=f"where episodes come from: {' | '.join(TASKS.names())} "
                   "(default: labels; the others ignore the data's labels)")
    _episode_args(p, queries=15)
    p.add_argument("--tasks-per-step", type=int, default=None, help="episodes per step and process (default: 32)")

    p = sub.add_parser("evaluate", help="score frozen features: the probe fits the train split, scores --split")
    p.add_argument("run_dir")
    _data_args(p, "test")
    p.add_argument("--protocol", required=True, help="linear | knn | svm | cluster | fewshot")
    p.add_argument("--labels-per-class", type=int, default=None, help="fit the probe on K labels per class")
    p.add_argument("--seeds", type=int, default=5, help="label draws averaged with --labels-per-class")
    _episode_args(p, queries=15)
    p.add_argument("--episodes", type=int, default=2000, help="fewshot: episodes drawn with a fixed seed")
    p.add_argument("--adapt", default="prototype", help="fewshot: prototype | cosine | logreg | finetune (a "
                   "meta-learner's own adaptation, e.g. MAML's inner loop; a head fine-tuned on frozen features otherwise)")

    p = sub.add_parser("embed", help="write the features of a data set to .npy or .parquet")
    p.add_argument("run_dir")
    _data_args(p, "all")
    p.add_argument("--out", required=True, help="FILE.npy or FILE.parquet")

    p = sub.add_parser("download", help="download a data set from its official address (checksummed)")
    p.add_argument("name", help="mnist | cifar10 | omniglot")
    p.add_argument("--root", default=None, help="cache folder (default: $SELFMETA_CACHE or ~/.cache/selfmeta)")

    sub.add_parser("list", help="data formats, encoders, methods, protocols")
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
    values.setdefault("encoder", data.spec.default_encoder)
    cfg = TrainConfig.from_dict(values)
    info = {**fingerprint(args.data), "format": args.format, "split": args.split,
            **{key: getattr(args, key) for key in SOURCE_FLAGS}}
    result = train(cfg, data, out, resume=args.resume, progress=not args.no_progress, data_info=info)
    if distributed.launched_rank() != 0:  # under torchrun one summary is enough (the group is ended)
        return
    print(json.dumps({"run_dir": str(out), "steps": result.steps, "epochs": round(result.epochs_done, 3),
                      "seconds": round(result.elapsed, 1), "stopped_by": result.stopped_by,
                      "final_loss": result.history[-1]["loss"] if result.history else None}))


def _features(run_dir: str, data) -> np.ndarray:
    from selfmeta.engine.model import check_compatible, embed, load_backbone

    backbone, description = load_backbone(run_dir)
    check_compatible(description, data)
    return embed(backbone, data).numpy()


def _fewshot(args: argparse.Namespace, test) -> dict:
    import time

    import torch

    from selfmeta.data.episodes import EpisodeSpec
    from selfmeta.engine.model import check_compatible, load_backbone, load_learner
    from selfmeta.evaluation.fewshot import (
        ADAPTATIONS, episode_accuracy, fewshot_episodes, learner_episode_accuracy, summarize,
    )

    if args.adapt not in ADAPTATIONS:
        raise SelfmetaError(f"unknown adaptation {args.adapt!r}; valid: {', '.join(ADAPTATIONS)}")
    spec = EpisodeSpec(*(default if given is None else given for given, default in
                         ((args.ways, 5), (args.shots, 1), (args.queries, 15))))
    start = time.perf_counter()
    episodes = fewshot_episodes(test.require_labels(), spec, args.episodes)
    _, description = load_backbone(args.run_dir)
    check_compatible(description, test)
    learner = load_learner(args.run_dir, test) if args.adapt == "finetune" else None
    if learner is not None:  # the meta-learner's own adaptation, on raw items
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


def cmd_evaluate(args: argparse.Namespace) -> None:
    from selfmeta.files import atomic_write
    from selfmeta.evaluation import PROTOCOLS, run_protocol

    if args.protocol not in (*PROTOCOLS, "fewshot"):
        raise SelfmetaError(f"unknown protocol {args.protocol!r}; valid: {', '.join((*PROTOCOLS, 'fewshot'))}")
    run_dir = Path(args.run_dir)
    if run_dir.is_dir() and not os.access(run_dir, os.W_OK):  # say so before the work, not after it
        raise SelfmetaError(f"{run_dir} is not writable: evaluate writes its result to {run_dir / 'metrics.json'}")
    test = _load(args)
    if args.protocol == "fewshot":
        result = _fewshot(args, test)
    else:
        test_y = test.require_labels().numpy()
        train_x = train_y = None
        if args.protocol != "cluster":
            train = _load(args, "train")
            train_y = train.require_labels().numpy()
            train_x = _features(args.run_dir, train)
        result = run_protocol(args.protocol, train_x, train_y, _features(args.run_dir, test), test_y,
                              args.labels_per_class, args.seeds)
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
    features = _features(args.run_dir, data)
    if out.suffix == ".npy":
        atomic_write(out, lambda tmp: np.save(open(tmp, "wb"), features))
    else:
        import pandas as pd

        frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(features.shape[1])])
        if data.y is not None:
            frame["label"] = [data.classes[i] for i in data.y.tolist()]
        atomic_write(out, lambda tmp: frame.to_parquet(tmp))
    print(json.dumps({"out": str(out), "items": int(features.shape[0]), "features": int(features.shape[1])}))


def cmd_download(args: argparse.Namespace) -> None:
    from selfmeta.data.download import DOWNLOADERS

    if args.name not in DOWNLOADERS:
        raise SelfmetaError(f"unknown data set {args.name!r}; valid: {', '.join(DOWNLOADERS)}")
    print(DOWNLOADERS[args.name](Path(args.root) if args.root else None))


def cmd_list(args: argparse.Namespace) -> None:
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

    w = 2 + max(len(n) for n in [*SOURCES, *ENCODERS, *METHODS, *METALEARNERS, *TASKS])
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
    print("modalities, with their views (views.NAME=VALUE):")
    for name in MODALITIES:
        modality = MODALITIES.get(name)
        entry(name, f"{modality.description}; default encoder {modality.default_encoder}",
              [f"views: {modality.views.description}"] + describe_options(modality.views, VIEW_ARGS))
    print("encoders (encoder.NAME=VALUE):")
    for name in ENCODERS:
        cls = ENCODERS.get(name)
        entry(name, cls.description, describe_options(cls, ("input_shape",)))
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
    print("evaluation protocols:\n  " + ", ".join((*PROTOCOLS, "fewshot")))
    print("few-shot adaptations (--adapt):\n  " + ", ".join(ADAPTATIONS))


def cmd_quickstart(args: argparse.Namespace) -> None:
    from selfmeta.quickstart import run_quickstart

    run_quickstart(Path(args.out) if args.out else None, epochs=args.epochs)


COMMANDS = {"pretrain": cmd_pretrain, "metatrain": cmd_metatrain, "evaluate": cmd_evaluate, "embed": cmd_embed, "download": cmd_download,
            "list": cmd_list, "quickstart": cmd_quickstart}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting positionals at the first flag: take key=value options wherever they stand.
    if extra and args.command in ("pretrain", "metatrain") and all("=" in e and not e.startswith("-") for e in extra):
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
