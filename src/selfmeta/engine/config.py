"""The typed training configuration, saved resolved in every run directory (``config.json``).

Values come from defaults, then ``--config FILE`` (JSON, or TOML on Python >= 3.11), then ``key=value``
overrides. Options of the method, the views and the encoder are nested: ``method.temperature=0.5``,
``views.hflip=0``, ``encoder.width=32``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from selfmeta.errors import SelfmetaError
from selfmeta.options import Option, check_options, declared_options

PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_BATCH = 256  # items per step and process where neither the user nor the method chooses
# key=value prefixes of the nested option tables: method.temperature=0.5 sets method_options["temperature"].
# input.vocab_size=8000 sets the options of the modality's fitted preprocessor (text: the tokenizer).
GROUPS = {"method": "method_options", "views": "view_options", "encoder": "encoder_options", "tasks": "task_options",
          "input": "input_options"}


@dataclass
class TrainConfig:
    """Every option of a training run. Types and defaults are the fields'; ranges and help are in ``options``.

    Checked once, at construction (:func:`selfmeta.options.check_options`), with the method's, encoder's
    and task constructor's nested options; the views' options are checked when the data's modality is
    known (``build_method``).
    """

    method: str = "simclr"
    encoder: str = "conv4"
    epochs: int | None = 100         # None: run until time_budget (or steps)
    steps: int | None = None         # total optimizer steps; overrides epochs (a time_budget still applies)
    time_budget: float | None = None  # seconds of training; stops cleanly and saves
    batch_size: int | None = None    # per process (the global batch is x world size); None: the method's, capped to the data
    optimizer: str = "adamw"         # adamw | lars (SGD with LARS, as SimCLR's large-batch recipe)
    lr: float | None = None          # None: 2e-3 * batch/256 for adamw, 0.3 * batch/256 for lars
    weight_decay: float | None = None  # None: 1e-4 for adamw, 1e-6 for lars
    warmup: float = 0.05             # fraction of training spent in linear warm-up before the cosine decay
    # The gradients' global norm is clipped at this value before each step. None: the method's preference
    # (LEO's code clips at 0.1: its second-order inner loop has gradient spikes), else no clipping; 0: none.
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda
    # auto: bf16 autocast where the hardware computes bf16 natively (AVX-512 BF16 or AMX CPUs, bf16 GPUs),
    # fp32 elsewhere: on an AVX2-only CPU, bf16 is emulated and about six times slower than fp32.
    precision: str = "auto"          # auto | fp32 | bf16
    channels_last: bool = True       # NHWC memory layout for image encoders: faster convolutions on CPU
    log_every: int = 20              # steps between metric records
    # Label-free quality (RankMe, alignment, uniformity) of a fixed sample: None: every epoch and at least
    # 100 steps apart, and at the end; 0: never (selfmeta.evaluation.quality).
    quality_every: int | None = None
    quality_sample: int = 1024       # items of the training split in that fixed sample
    # Episodic training (selfmeta metatrain): where tasks come from, and their shape. None: item batches.
    tasks: str | None = None         # a task constructor (selfmeta list): "labels", "umtra", "cactus", ...
    ways: int = 5                    # N classes per episode
    shots: int = 1                   # K support items per class
    queries: int = 15                # Q query items per class
    tasks_per_step: int = 32         # episodes per optimizer step and process (the meta-batch)
    method_options: dict[str, Any] = field(default_factory=dict)
    view_options: dict[str, Any] = field(default_factory=dict)
    encoder_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)   # e.g. tasks.encoder=RUN for cactus
    input_options: dict[str, Any] = field(default_factory=dict)  # the preprocessor's: input.vocab_size=8000 (text)

    options: ClassVar[dict[str, Option]] = {
        "method": Option("a method (selfmeta list); a meta-learner when tasks is set"),
        "encoder": Option("an encoder (selfmeta list)"),
        "epochs": Option("passes over the data", ge=1),
        "steps": Option("optimizer steps in all", ge=1),
        "time_budget": Option("seconds of training, then a clean stop and save", gt=0),
        "batch_size": Option("items per step and process; null: the method's (256, TS2Vec 8), at most the data", ge=2),
        "optimizer": Option("adamw, or SGD with LARS (SimCLR's large-batch recipe)", choices=("adamw", "lars")),
        "lr": Option("peak learning rate; null: the method's, else 2e-3 x batch/256 (adamw), 0.3 x batch/256 "
                     "(lars), 1e-3 for meta-learning", gt=0),
        "weight_decay": Option("null: 1e-4 (adamw), 1e-6 (lars)", ge=0),
        "warmup": Option("fraction of training in linear warm-up before the cosine decay", ge=0, lt=1),
        "grad_clip": Option("clip the gradients' global norm at this value; null: the method's (leo 0.1), else "
                            "none; 0: none", ge=0),
        "seed": Option("seeds weights, batches, views and episodes", ge=0),
        "device": Option("auto takes a CUDA GPU when there is one", choices=("auto", "cpu", "cuda")),
        "precision": Option("auto: bf16 autocast where the CPU or GPU has native bf16, else fp32",
                            choices=PRECISIONS),
        "channels_last": Option("NHWC layout for image encoders (faster convolutions on CPU)"),
        "log_every": Option("steps between records in metrics.jsonl", ge=1),
        "quality_every": Option("steps between RankMe/alignment/uniformity records; null: every epoch, at least "
                                "100 steps apart, and at the end; 0: never", ge=0),
        "quality_sample": Option("items of the training split the quality signals are computed on", ge=2),
        "tasks": Option("a task constructor (selfmeta list); null: item batches (pretrain)"),
        "ways": Option("N classes per episode", ge=2),
        "shots": Option("K support items per class", ge=1),
        "queries": Option("Q query items per class", ge=1),
        "tasks_per_step": Option("episodes per step and process (the meta-batch)", ge=1),
        "method_options": Option("method.NAME=VALUE"),
        "view_options": Option("views.NAME=VALUE"),
        "encoder_options": Option("encoder.NAME=VALUE"),
        "task_options": Option("tasks.NAME=VALUE"),
        "input_options": Option("input.NAME=VALUE: the modality's preprocessor (text: the tokenizer)"),
    }

    def __post_init__(self) -> None:
        for name, value in check_options("training", TrainConfig, self.to_dict()).items():
            setattr(self, name, value)
        if self.epochs is None and self.time_budget is None and self.steps is None:
            raise SelfmetaError("give epochs, steps or a time budget")
        from selfmeta.data.tasks import TASKS, TASK_ARGS
        from selfmeta.encoders import ENCODERS
        from selfmeta.meta import METALEARNERS
        from selfmeta.methods import BUILT_BY_ENGINE, METHODS

        # Unknown names are errors listing the valid ones; nested options are checked by the same function
        # that build_method, build_encoder and build_tasks use, so a bad value stops before any data loads.
        if self.tasks is not None:
            self.task_options = check_options(f"tasks {self.tasks!r}", TASKS.get(self.tasks), self.task_options,
                                              TASK_ARGS)
        registry = METALEARNERS if self.tasks is not None else METHODS
        self.method_options = check_options(f"{registry.kind} {self.method!r}", registry.get(self.method),
                                            self.method_options, BUILT_BY_ENGINE)
        self.encoder_options = check_options(f"encoder {self.encoder!r}", ENCODERS.get(self.encoder),
                                             self.encoder_options, ("input_shape", *ENCODERS.get(self.encoder).inputs))
        if self.tasks is None and self.task_options:
            raise SelfmetaError("tasks.* options apply to episodic training (selfmeta metatrain) only")

    def effective(self, modality: str) -> dict[str, Any]:
        """Every option by the name a user types (``lr``, ``method.temperature``), the nested ones with their
        plug-in's defaults filled in, values as JSON gives them back: what ``--resume`` compares."""
        from selfmeta.data.tasks import TASK_ARGS, TASKS
        from selfmeta.encoders import ENCODERS
        from selfmeta.meta import METALEARNERS
        from selfmeta.methods import BUILT_BY_ENGINE, METHODS
        from selfmeta.modalities import VIEW_ARGS, get_modality

        plugins = {
            "method_options": ((METALEARNERS if self.tasks else METHODS).get(self.method), BUILT_BY_ENGINE),
            "encoder_options": (ENCODERS.get(self.encoder), ("input_shape", *ENCODERS.get(self.encoder).inputs)),
            "view_options": (get_modality(modality).views, VIEW_ARGS),
            "task_options": (TASKS.get(self.tasks), TASK_ARGS) if self.tasks else None,
            "input_options": (get_modality(modality).preprocessor, ()) if get_modality(modality).preprocessor else None,
        }
        prefixes = {field: prefix for prefix, field in GROUPS.items()}
        out = {}
        for key, value in json.loads(json.dumps(self.to_dict())).items():
            if key in plugins:
                declared = declared_options(*plugins[key]) if plugins[key] else {}
                defaults = json.loads(json.dumps({n: d.default for n, d in declared.items()}))
                out.update({f"{prefixes[key]}.{k}": v for k, v in {**defaults, **value}.items()})
            else:
                out[key] = value
        return out

    def resolved(self, items: int, world: int = 1) -> "TrainConfig":
        """The configuration a run uses: a batch size and learning rate left unset take the method's
        preference (``Method.defaults``), else 256 and the scaled default; a batch size that was not given
        is capped to the data (a few dozen series train with the default command)."""
        from selfmeta.meta import METALEARNERS
        from selfmeta.methods import METHODS

        preferred = (METALEARNERS if self.tasks else METHODS).get(self.method).defaults
        changes: dict[str, Any] = {}
        if self.batch_size is None:
            changes["batch_size"] = max(2, min(preferred.get("batch_size", DEFAULT_BATCH), items // world))
        if self.lr is None and "lr" in preferred:
            changes["lr"] = preferred["lr"]
        if self.grad_clip is None and "grad_clip" in preferred:
            changes["grad_clip"] = preferred["grad_clip"]
        return replace(self, **changes) if changes else self

    @property
    def base_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.tasks is not None:
            return 1e-3  # Adam's 1e-3, the meta-learning papers' outer learning rate
        return (2e-3 if self.optimizer == "adamw" else 0.3) * self.batch_size / 256

    @property
    def decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 1e-4 if self.optimizer == "adamw" else 1e-6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise SelfmetaError(f"unknown option {unknown[0]!r}; valid: {', '.join(sorted(valid))}")
        return cls(**values)


def parse_value(text: str) -> Any:
    """``key=value`` text -> JSON value when it parses (numbers, true, null, [0.2, 1.0]), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SelfmetaError(f"no such config file: {path}")
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(path.read_text())
        values = json.loads(path.read_text())
    except (ValueError, ImportError) as exc:
        raise SelfmetaError(f"{path}: cannot parse the config ({exc})".splitlines()[0]) from None
    if not isinstance(values, dict):
        raise SelfmetaError(f"{path}: the config must be a JSON object")
    return values


def resolve_options(saved: dict[str, Any], config_file: dict[str, Any], flags: dict[str, Any],
                    overrides: list[str]) -> dict[str, Any]:
    """A command's options, by one precedence (later sources win, key by key, nested tables merged):

    the defaults of :class:`TrainConfig` < the run's own ``config.json`` (``--resume``) < ``--config FILE`` <
    the command's flags (``--method``, ``--epochs``...) < ``key=value`` overrides.
    """
    values: dict[str, Any] = {}
    for source in (saved, config_file, flags):
        for key, value in source.items():
            if key in GROUPS.values() and isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
    return apply_overrides(values, overrides)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` / ``method.key=value`` overrides to a config dict (a new dict)."""
    values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SelfmetaError(f"expected key=value, got {item!r}")
        head, dot, rest = key.partition(".")
        if dot:
            if head not in GROUPS:
                raise SelfmetaError(f"unknown option group {head!r}; valid: {', '.join(GROUPS)}")
            values.setdefault(GROUPS[head], {})[rest] = parse_value(text)
        else:
            values[key] = parse_value(text)
    return values
