"""selfmeta tune: choose a run's settings on the user's own data within a time budget, then train them.

The search (Optuna: a seeded TPE sampler, successive-halving pruning) runs short pilots of the same method
and encoder on the training split, each scored on a fixed sample by a label-free signal, by default view
retrieval: how often the second of two views of an item, drawn with the defaults' views, is the nearest of
the sample's second views to its first (:mod:`selfmeta.evaluation.quality`; alignment, LiDAR and RankMe on
request), or, where the user has a few labels on a split
they name, by the accuracy of a linear probe fitted on ``labels_per_class`` of them per class and scored on
the rest of that split. The space is declared by the parts themselves: the method's ``search`` (SimCLR's
temperature), the learning rate as a factor of the default (0.25x to 4x), the batch size and, with a probe
score, the views' ``search_space``; options the user sets are never searched, and ``--search`` adds ranges.
A label-free score leaves the views at the data's defaults (``Views.data_defaults``) unless the user asks:
any such score measures invariance to some reference views, so it prefers the pilots trained on those
views whatever their worth (over 20 MNIST pilots the defaults' views scored best and were 6 points
behind the best pilot with 10 labels per class, BENCHMARKS.md); with the views fixed, it compares the
optimization settings at the pilots' length (short pilots still favour settings that learn fast and may
fall behind over the full budget: BENCHMARKS.md). The first pilot is the defaults, so the winner scores at least as well as
they do on the signal.

Budget: the search takes ``search_share`` of ``time_budget`` (trials start while that time lasts, and the
one in flight is cut when it ends); the winner then trains for the rest, starting from its pilot's weights
with a new warm-up and schedule (so the search's best training is not thrown away), an ordinary run whose
``config.json`` lists every trial, its settings, scores and state, and the winner.

Pilots: each trains for ``pilot_seconds`` (a sixth of the search time), as the winner will be judged, on
the time it is given (a batch size or method that learns more per second shows it), with the learning-rate
schedule over its own length, and reports its score after each quarter. Successive halving stops a pilot
at the first, second and fourth quarter when it is in the worse half of the pilots there. With
``pilot_items``, every pilot trains that many items instead (steps = items / batch): with a fixed
``trials`` count, such a search is reproducible from its seed.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from selfmeta.data.dataset import Dataset
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import adapt_views, build_method, fit_preprocessor, prepare
from selfmeta.engine.trainer import TrainResult, resolve_device, train
from selfmeta.errors import SelfmetaError
from selfmeta.evaluation.quality import QualityProbe
from selfmeta.methods import BUILT_BY_ENGINE
from selfmeta.options import Searched, declared_options

log = logging.getLogger(__name__)

SEARCH_SHARE = 0.4            # of the budget spent choosing; the rest trains the winner
PILOTS_PER_SEARCH = 6         # the search time holds about this many full-length pilots (pruned ones cost less)
QUARTERS = 4                  # score reports per pilot (successive halving's rungs are the 1st, 2nd and 4th)
LR_SCALE = Searched(0.25, 4.0, log=True)       # the learning rate, as a factor of the default for the batch
BATCH_SIZES = (64, 128, 256)  # searched where the user and the method leave the batch size free
METHODS = ("simclr", "moco", "barlow", "vicreg")  # searched where the user names no method
# Label-free scores (selfmeta.evaluation.quality), the first the default: chosen by their rank correlation
# with linear-probe accuracy on the validation images of MNIST and CIFAR-10 over 20 pilots each
# (BENCHMARKS.md), where RankMe and LiDAR ran against it (short pilots that learn little keep the spread of
# their random start) and alignment, close to retrieval on MNIST, failed on CIFAR-10.
SIGNALS = ("retrieval", "alignment", "lidar", "rankme")
COLLAPSED = -0.05   # uniformity above this: the sample's items sit at nearly one point (a collapsed encoder)
VAL_ITEMS = 5_000             # items of the labelled split a probe score uses at most (a fixed sample)
PROBE_DRAWS = 3               # label draws a probe score averages


class PilotFailed(Exception):
    """A pilot whose training failed (a learning rate that made the loss diverge): the search goes on."""


@dataclass
class Trial:
    number: int
    options: dict[str, Any]               # key=value options as a user types them
    state: str = "running"                # complete | pruned | cut (by the end of the search time) | failed
    score: float | None = None            # the last score reported
    scores: list[float] = field(default_factory=list)  # one per quarter reached
    steps: int = 0
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        return {"number": self.number, "options": self.options, "state": self.state, "score": self.score,
                "scores": self.scores, "steps": self.steps, "seconds": round(self.seconds, 1)}


@dataclass
class TuneResult:
    trials: list[Trial]
    best: Trial
    result: TrainResult                   # the winner's full run
    search_seconds: float
    score: str                            # "rankme" | "probe"



def search_space(cfg: TrainConfig, data: Dataset, fixed: set[str], method: str,
                 extra: dict[str, Searched] | None = None, views: bool = True) -> dict[str, Searched]:
    """What the search varies for ``method`` on ``data``, by the names a user types (``views.rotation``,
    ``method.temperature``, ``lr_scale``, ``batch_size``), without the ``fixed`` ones; ``extra``: the user's
    own ranges (``--search``), which replace or add to the parts' (``method.*`` ones where ``method`` has it);
    ``views=False``: the views' own ranges left out (a label-free score cannot judge them, module doc)."""
    from selfmeta.meta import METALEARNERS
    from selfmeta.methods import METHODS as REGISTRY

    method_cls = (METALEARNERS if cfg.tasks else REGISTRY).get(method)
    space = {f"views.{k}": v for k, v in data.spec.views.search_space(tuple(data.input_shape)).items()} if views else {}
    space.update({f"method.{k}": v for k, v in method_cls.search.items()})
    if "lr" not in fixed:
        space["lr_scale"] = LR_SCALE
    if "batch_size" not in fixed and "batch_size" not in method_cls.defaults and not cfg.tasks:
        sizes = tuple(b for b in BATCH_SIZES if b <= len(data)) or (len(data),)
        space["batch_size"] = Searched(choices=sizes)
    own = declared_options(method_cls, BUILT_BY_ENGINE)
    space.update({k: v for k, v in (extra or {}).items() if not k.startswith("method.") or k[7:] in own})
    return {k: v for k, v in space.items() if k not in fixed}


class _BadRange(Exception):
    """A --search range that is not LOW:HIGH, LOW:HIGH:log or a list."""


def parse_search(texts: list[str], cfg: TrainConfig, data: Dataset) -> dict[str, Searched]:
    """``--search`` ranges: ``NAME=LOW:HIGH`` (``:log`` for a log scale) or ``NAME=A,B,C``, NAME a view or
    method option (``views.rotation``, ``method.temperature``), ``lr_scale`` or ``batch_size``; every bound
    checked against the option's own range. One SelfmetaError line for anything else."""
    import json

    from selfmeta.meta import METALEARNERS
    from selfmeta.methods import METHODS as REGISTRY
    from selfmeta.modalities import VIEW_ARGS
    from selfmeta.options import Declared, Option

    views = declared_options(data.spec.views, (*VIEW_ARGS, *data.spec.views.inputs))
    method = declared_options((METALEARNERS if cfg.tasks else REGISTRY).get(cfg.method), BUILT_BY_ENGINE)
    special = {"lr_scale": Declared("lr_scale", "float", float, False, 1.0, Option(gt=0)),
               "batch_size": Declared("batch_size", "int", int, False, 256, Option(ge=2))}
    out = {}
    for text in texts:
        name, sep, spec = text.partition("=")
        group, dot, option = name.partition(".")
        declared = (views if group == "views" else method if group == "method" else {}).get(option) if dot else \
            special.get(name)
        if not sep or declared is None:
            valid = [f"views.{k}" for k in views] + [f"method.{k}" for k in method] + list(special)
            raise SelfmetaError(f"--search {text!r}: expected NAME=LOW:HIGH or NAME=A,B,... with NAME one of: "
                                f"{', '.join(valid)}")
        if declared.kind not in ("int", "float", "pair"):
            raise SelfmetaError(f"--search {name}: only numeric options are searched ({name} takes "
                                f"{declared.describe()})")
        item = declared.item if declared.kind == "pair" else (int if declared.kind == "int" else float)
        high_end = declared.default[1] if declared.kind == "pair" else None

        def number(word: str) -> Any:
            try:
                value = json.loads(word)
            except ValueError:
                value = word
            one = Declared(name, "int" if item is int else "float", item, False, None, declared.spec)
            return one.check(value, "--search")

        try:
            if ":" in spec:
                parts = spec.split(":")
                if len(parts) not in (2, 3) or len(parts) == 3 and parts[2] != "log":
                    raise _BadRange
                low, high = number(parts[0]), number(parts[1])
                log_scale = len(parts) == 3
                if low >= high or log_scale and low <= 0:
                    raise _BadRange
                out[name] = Searched(low, high, log=log_scale, integer=item is int, pair_high=high_end)
            else:
                choices = tuple(number(word) for word in spec.split(","))
                out[name] = Searched(choices=choices, pair_high=high_end)
        except _BadRange:
            raise SelfmetaError(f"--search {text!r}: give LOW:HIGH with LOW < HIGH (LOW:HIGH:log, LOW > 0, for a "
                                "log scale) or a list A,B,...") from None
    return out


def check_space(cfg: TrainConfig, data: Dataset, fixed: set[str], methods: tuple[str, ...],
                extra: dict[str, Searched] | None = None, views: bool = True) -> None:
    """Refuse a search with nothing to search (every option set by the user), before any pilot."""
    if set(extra or ()) & fixed:
        raise SelfmetaError(f"{sorted(set(extra) & fixed)[0]} is both set and searched (--search); choose one")
    if len(methods) < 2 and not search_space(cfg, data, fixed, methods[0], extra, views):
        raise SelfmetaError(f"nothing to tune: every option the search varies for {methods[0]} on {data.modality} "
                            "data is set on the command line; leave some free, or use pretrain")


def _suggest(trial: Any, name: str, where: Searched) -> Any:
    if where.choices is not None:
        return where.value(trial.suggest_categorical(name, list(where.choices)))
    if where.integer:
        return where.value(trial.suggest_int(name, int(where.low), int(where.high), log=where.log))
    drawn = trial.suggest_float(name, where.low, where.high, log=where.log)
    return where.value(float(f"{drawn:.3g}"))  # three digits: settings a person can read and type again


def trial_config(base: TrainConfig, options: dict[str, Any], items: int) -> TrainConfig:
    """``base`` with a trial's options (``lr_scale`` becomes ``lr``, scaled from the default for its batch)."""
    from selfmeta.engine.config import resolve_options

    options = dict(options)
    scale = options.pop("lr_scale", None)
    cfg = TrainConfig.from_dict(resolve_options(base.to_dict(), {}, {}, [f"{k}={_typed(v)}" for k, v in options.items()]))
    if scale is not None:
        cfg = replace(cfg, lr=cfg.resolved(items).base_lr * scale)
    return cfg


def _typed(value: Any) -> str:
    import json

    return json.dumps(list(value) if isinstance(value, tuple) else value)


class _Scorer:
    """The score of a method's backbone: a label-free signal on a fixed training sample, or a few-label
    probe's accuracy. ``alignment``: minus the mean squared distance between two views of an item, drawn
    with the same reference views (the defaults') for every pilot, and the worst score (-4) for a collapsed
    encoder, whose views agree only because every item does; ``retrieval``: how often an item's second view
    is found from its first among the sample's, with those views; ``lidar``: LiDAR with them; ``rankme``."""

    def __init__(self, data: Dataset, device: torch.device, seed: int, val: Dataset | None, labels_per_class: int | None,
                 signal: str, reference: Any):
        self.device, self.signal, self.reference = device, signal, reference
        self.name = "probe" if val is not None else signal
        self.probe = QualityProbe(data, seed=seed)
        self.val, self.k = None, labels_per_class
        if val is not None:
            keep = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[:VAL_ITEMS]
            self.val = val.subset(keep.sort().values)
            self.val_y = self.val.require_labels().numpy()

    def __call__(self, method: Any) -> float:
        if self.val is None:
            if self.signal == "rankme":
                return self.probe(method, self.device, with_views=False)["rankme"]
            measured = self.probe(method, self.device, views=self.reference.to(self.device))
            if self.signal in ("lidar", "retrieval"):
                return measured[self.signal]
            return -4.0 if measured["uniformity"] > COLLAPSED else -measured["alignment"]
        from selfmeta.engine.model import embed
        from selfmeta.evaluation.protocols import linear_probe, sample_per_class

        was_training = method.training
        x = embed(method.backbone, self.val, device=self.device).numpy()
        method.train(was_training)
        accuracies = []
        for seed in range(PROBE_DRAWS):
            fit = sample_per_class(self.val_y, self.k, seed)
            rest = np.setdiff1d(np.arange(len(x)), fit)
            accuracies.append(linear_probe(x[fit], self.val_y[fit], x[rest], self.val_y[rest])["accuracy"])
        return float(np.mean(accuracies))


def tune(
    cfg: TrainConfig,
    data: Dataset,
    time_budget: float,
    run_dir: Any = None,
    fixed: set[str] | None = None,
    methods: tuple[str, ...] | None = None,
    space: dict[str, Searched] | None = None,
    signal: str = SIGNALS[0],
    val: Dataset | None = None,
    labels_per_class: int | None = None,
    search_share: float = SEARCH_SHARE,
    trials: int | None = None,
    pilot_items: int | None = None,
    progress: bool = False,
    data_info: dict[str, Any] | None = None,
    report: Callable[[Trial], None] | None = None,
) -> TuneResult:
    """Search settings for ``cfg`` on ``data`` for ``search_share`` of ``time_budget`` seconds (or ``trials``
    pilots), then train the winner for the rest into ``run_dir`` (None: in memory).

    ``fixed``: options the user set (never searched); ``methods``: the methods to choose between (default
    ``cfg.method`` alone); ``space``: the user's own ranges (:func:`parse_search`); ``signal``: the label-free
    score (``SIGNALS``); ``val`` with ``labels_per_class``: score pilots by a few-label probe on that split.
    """
    import optuna

    start = time.perf_counter()
    if not 0 < search_share < 1:
        raise SelfmetaError(f"--search-share takes a number between 0 and 1, got {search_share}")
    if (val is None) != (labels_per_class is None):
        raise SelfmetaError("a probe score needs both a labelled split (--val-split) and --labels-per-class")
    fixed = set(fixed or ())
    methods = methods or (cfg.method,)
    data = fit_preprocessor(cfg, data)
    cfg, _ = adapt_views(cfg, data)  # the data's rule gives the defaults the search starts from
    check_space(cfg, data, fixed, methods, space, views=val is not None)
    if signal not in SIGNALS:
        raise SelfmetaError(f"unknown score {signal!r}; valid: {', '.join(SIGNALS)}")
    reference = build_method(cfg.resolved(len(data)), data).views  # every option checked before the first pilot
    if val is not None:
        val.require_labels()
        val = prepare(val, data.preprocessor) if data.preprocessor is not None else val
    device = resolve_device(cfg.device)
    scorer = _Scorer(data, device, cfg.seed, val, labels_per_class, signal, reference)
    deadline = start + search_share * time_budget
    pilot_seconds = search_share * time_budget / PILOTS_PER_SEARCH

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the trials are reported by ``report``
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=5),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
    )
    done: list[Trial] = []
    kept: dict[str, Any] = {"score": -math.inf, "state": None}   # the best complete pilot's weights

    def objective(trial: optuna.Trial) -> float:
        options: dict[str, Any] = {}
        if trial.number > 0:  # the first pilot is the defaults
            method = trial.suggest_categorical("method", list(methods)) if len(methods) > 1 else methods[0]
            options = {"method": method} if len(methods) > 1 else {}
            for name, where in search_space(replace(cfg, method=method), data, fixed, method, space,
                                            views=val is not None).items():
                options[name] = _suggest(trial, name, where)
        record = Trial(trial.number, options)
        done.append(record)
        pilot = replace(trial_config(cfg, options, len(data)), quality_every=0)
        if pilot_items is None:  # equal time: what the user's budget buys (the monitor cuts one at the deadline)
            pilot = replace(pilot, epochs=None, steps=None, time_budget=pilot_seconds)
            marks = None
        else:
            steps = max(QUARTERS, math.ceil(pilot_items / pilot.resolved(len(data)).batch_size))
            pilot = replace(pilot, epochs=None, steps=steps, time_budget=None)
            marks = [round(steps * q / QUARTERS) for q in range(1, QUARTERS + 1)]
        began = time.perf_counter()
        state = {"pruned": False, "cut": False}

        def monitor(step: int, elapsed: float, method_: Any) -> bool:
            if trials is None and time.perf_counter() >= deadline:
                state["cut"] = True
                return True
            quarter = (marks.index(step) + 1 if step in marks else 0) if marks else (
                min(QUARTERS, int(QUARTERS * elapsed / pilot.time_budget + 1e-9)))
            if marks is None and quarter <= len(record.scores):
                return False
            if quarter == 0 or quarter == QUARTERS:
                return False  # the last quarter is scored once training ends
            record.scores.append(scorer(method_))
            trial.report(record.scores[-1], quarter)
            if trial.should_prune():
                state["pruned"] = True
                return True
            return False

        try:
            result = train(pilot, data, None, progress=False, monitor=monitor)
        except SelfmetaError as exc:  # e.g. a learning rate that made the loss diverge: the search goes on
            record.state, record.seconds = "failed", time.perf_counter() - began
            log.info("trial %d failed: %s", trial.number, exc)
            if report is not None:
                report(record)
            if trial.number == 0:  # the defaults themselves fail: no search can help
                raise SelfmetaError(f"the first pilot (the defaults) failed: {exc}") from None
            raise PilotFailed(str(exc)) from None
        record.steps, record.seconds = result.steps, time.perf_counter() - began
        if not state["pruned"] and not state["cut"]:
            record.scores.append(scorer(result.method))
            trial.report(record.scores[-1], QUARTERS)
        record.score = record.scores[-1] if record.scores else None
        record.state = "cut" if state["cut"] else "pruned" if state["pruned"] else "complete"
        if record.state == "complete" and record.score > kept["score"]:
            kept.update(score=record.score, state={k: v.detach().cpu().clone()
                                                   for k, v in result.method.state_dict().items()})
        if report is not None:
            report(record)
        if record.state != "complete":
            raise optuna.TrialPruned()
        return record.score

    if trials is not None:
        study.optimize(objective, n_trials=trials, catch=(PilotFailed,))
    else:
        study.optimize(objective, timeout=max(1e-3, deadline - time.perf_counter()), catch=(PilotFailed,))
    complete = [t for t in done if t.state == "complete"]
    if not complete:
        raise SelfmetaError(f"no pilot finished within the search's {search_share * time_budget:.0f} s; give a longer "
                            "--time-budget")
    best = max(complete, key=lambda t: t.score)  # the first of equal scores: the one whose weights are kept
    search_seconds = time.perf_counter() - start
    final = replace(trial_config(cfg, best.options, len(data)), epochs=None, steps=None,
                    time_budget=max(1.0, time_budget - search_seconds))
    record = {"score": scorer.name, "search_seconds": round(search_seconds, 1), "winner": best.number,
              "winner_options": best.options, "trials": [t.record() for t in done]}
    result = train(final, data, run_dir, progress=progress, data_info=data_info, notes={"tune": record},
                   start_from=kept["state"])
    return TuneResult(done, best, result, search_seconds, scorer.name)
