"""The typed training configuration, saved resolved in every run directory (``config.json``).

Values come from defaults, then ``--config FILE`` (JSON, or TOML on Python >= 3.11), then ``key=value``
overrides. Options of the method, the views and the encoder are nested: ``method.temperature=0.5``,
``views.hflip=0``, ``encoder.width=32``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from selfmeta.errors import SelfmetaError

NESTED = ("method_options", "view_options", "encoder_options", "task_options")
_PREFIX = {"method": "method_options", "views": "view_options", "encoder": "encoder_options", "tasks": "task_options"}


@dataclass
class TrainConfig:
    method: str = "simclr"
    encoder: str = "conv4"
    epochs: int | None = 100         # None: run until time_budget (or steps)
    steps: int | None = None         # total optimizer steps; overrides epochs (a time_budget still applies)
    time_budget: float | None = None  # seconds of training; stops cleanly and saves
    batch_size: int = 256            # per process; the global batch is batch_size * world size
    optimizer: str = "adamw"         # adamw | lars (SGD with LARS, as SimCLR's large-batch recipe)
    lr: float | None = None          # None: 2e-3 * batch/256 for adamw, 0.3 * batch/256 for lars
    weight_decay: float | None = None  # None: 1e-4 for adamw, 1e-6 for lars
    warmup: float = 0.05             # fraction of training spent in linear warm-up before the cosine decay
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda
    precision: str = "fp32"          # fp32 | bf16 (autocast)
    channels_last: bool = True       # NHWC memory layout for image encoders: faster convolutions on CPU
    log_every: int = 20              # steps between metric records
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

    def __post_init__(self) -> None:
        choices = {"optimizer": ("adamw", "lars"), "device": ("auto", "cpu", "cuda"), "precision": ("fp32", "bf16")}
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise SelfmetaError(f"unknown {key} {getattr(self, key)!r}; valid: {', '.join(valid)}")
        if self.epochs is None and self.time_budget is None and self.steps is None:
            raise SelfmetaError("give epochs, steps or a time budget")
        if self.steps is not None and self.steps < 1:
            raise SelfmetaError(f"steps must be at least 1, got {self.steps}")
        if self.tasks is not None:
            from selfmeta.data.tasks import TASKS

            TASKS.get(self.tasks)  # an unknown name is an error listing the valid ones
        if self.tasks_per_step < 1:
            raise SelfmetaError(f"tasks_per_step must be at least 1, got {self.tasks_per_step}")
        if self.epochs is not None and self.epochs < 1:
            raise SelfmetaError(f"epochs must be at least 1, got {self.epochs}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise SelfmetaError(f"the time budget must be positive, got {self.time_budget}")
        if self.batch_size < 2:
            raise SelfmetaError(f"batch_size must be at least 2 (contrastive pairs), got {self.batch_size}")
        if not 0 <= self.warmup < 1:
            raise SelfmetaError(f"warmup is a fraction of training in [0, 1), got {self.warmup}")

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
        try:
            return cls(**values)
        except TypeError as exc:
            raise SelfmetaError(f"bad configuration: {exc}") from None


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


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` / ``method.key=value`` overrides to a config dict (a new dict)."""
    values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SelfmetaError(f"expected key=value, got {item!r}")
        head, dot, rest = key.partition(".")
        if dot:
            if head not in _PREFIX:
                raise SelfmetaError(f"unknown option group {head!r}; valid: {', '.join(_PREFIX)}")
            values.setdefault(_PREFIX[head], {})[rest] = parse_value(text)
        else:
            values[key] = parse_value(text)
    return values
