"""The training loop: plain PyTorch, one process or several under torchrun.

Per step: slice a batch of raw items, move it to the device, call the method (which makes its views
there), back-propagate, step the optimizer with the scheduled learning rate. Stops after ``epochs`` or
``time_budget`` seconds, whichever comes first, and saves. Checkpoints are written atomically after
every epoch and at the end; ``resume=True`` continues from the last one, mid-epoch included.

Run directory::

    config.json          resolved configuration, data description, the commands that started and resumed it
    checkpoint.pt        latest resumable state (weights_only-loadable)
    encoder.safetensors  backbone weights + description, for embed/evaluate/the API
    metrics.jsonl        one JSON record per logged step; label-free quality records (RankMe, alignment,
                         uniformity of a fixed sample) every epoch and at the end
    tensorboard/         the same metrics for TensorBoard
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from selfmeta import __version__, distributed
from selfmeta.data.dataset import Dataset
from selfmeta.engine.batches import batch_plan
from selfmeta.engine.checkpoint import CHECKPOINT, WEIGHTS, load_checkpoint, save_checkpoint, save_weights
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import adapt_views, build_method, describe, fit_preprocessor
from selfmeta.engine.optim import build_optimizer, lr_factor
from selfmeta.errors import SelfmetaError
from selfmeta.evaluation.quality import QualityProbe
from selfmeta.files import atomic_write, remove_stale_temporaries, writer_pid
from selfmeta.methods import Method
from selfmeta.runtime import cpu_description, resolve_precision

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
CONFIG = "config.json"


@dataclass
class TrainResult:
    method: Method
    steps: int
    epochs_done: float
    elapsed: float                         # seconds of training (resumed runs included)
    stopped_by: str                        # "epochs" | "steps" | "time_budget" | "monitor"
    history: list[dict[str, Any]] = field(default_factory=list)   # the training records of metrics.jsonl
    description: dict[str, Any] = field(default_factory=dict)  # what rebuilds the backbone (model.describe)
    quality: dict[str, float] = field(default_factory=dict)      # the final label-free signals (evaluation.quality)
    quality_history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl's quality records


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SelfmetaError("device 'cuda' requested but no CUDA GPU is available")
    if name == "cuda" and distributed.is_distributed():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> torch.Tensor:
    """The CPU generator's state, followed by the GPU's when training on one (views draw there)."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return torch.cat(states)


def set_rng_state(state: torch.Tensor, device: torch.device) -> None:
    cpu_size = torch.get_rng_state().numel()
    torch.set_rng_state(state[:cpu_size].clone())
    if device.type == "cuda" and state.numel() > cpu_size:
        torch.cuda.set_rng_state(state[cpu_size:].clone(), device)


class _Metrics:
    """JSONL and TensorBoard records, on the main process only."""

    def __init__(self, run_dir: Path | None, resume_step: int) -> None:
        self.history: list[dict[str, Any]] = []   # the training records (loss, lr, speed...)
        self.quality: list[dict[str, Any]] = []   # the label-free quality records (no loss)
        self.path = run_dir / METRICS if run_dir else None
        self.tb = None
        if run_dir is None:
            return
        if resume_step >= 0 and self.path.is_file():
            # Keep the records up to the checkpoint: the steps after it are trained again.
            kept = [r for r in read_records(self.path) if r["step"] <= resume_step]
            atomic_write(self.path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in kept)))
            self.history = [r for r in kept if "loss" in r]
            self.quality = [r for r in kept if "loss" not in r]
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=max(resume_step, 0) + 1)

    def write(self, record: dict[str, Any]) -> None:
        group = "train" if "loss" in record else "quality"
        (self.history if group == "train" else self.quality).append(record)
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                self.tb.add_scalar(f"{group}/{key}", value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a line that does not parse (torn by a kill mid-append) is dropped."""
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s, line %d: not a whole record (a write cut short); dropped", path, number)
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


# What a run directory holds (evaluate adds metrics.json and evaluations.jsonl to finished runs).
RUN_ENTRIES = (CONFIG, METRICS, "tensorboard", CHECKPOINT, WEIGHTS, "ranks.json", "metrics.json", "evaluations.jsonl")
# Options that --resume may change: a run can be continued for longer.
LENGTH_OPTIONS = ("epochs", "steps", "time_budget")


def prepare_run_dir(run_dir: Path, resume: bool, cfg: TrainConfig, data_record: dict[str, Any]) -> bool:
    """Check ``run_dir`` before training; True when training resumes from its checkpoint.

    A run directory is resumable once its first checkpoint is written. Before that (a crash, a kill, a NaN
    loss or a full disk in the first epoch) it holds only ``config.json`` and logs: a rerun of the command,
    with or without ``--resume``, takes it over and starts again from step 0. A directory that holds a
    checkpoint is only continued with ``--resume``, and only with the same data and options (the length
    options may change); anything else in the directory is refused, never deleted.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise SelfmetaError(f"--out {run_dir} is a file, not a folder; choose another --out")
    if (run_dir / CHECKPOINT).is_file():
        if not resume:
            raise SelfmetaError(f"{run_dir} already holds a run ({CHECKPOINT}); pass --resume to continue it, "
                                "or choose another --out")
        check_same_run(run_dir, cfg, data_record)
        return True
    entries = sorted(run_dir.iterdir()) if run_dir.is_dir() else []
    foreign = [e.name for e in entries if e.name not in RUN_ENTRIES and writer_pid(e.name) is None]
    if foreign:
        raise SelfmetaError(f"{run_dir} already exists and holds files of its own ({', '.join(foreign[:3])}); "
                            "choose another --out")
    if not entries:
        if resume:
            raise SelfmetaError(f"--resume: there is no run in {run_dir} to resume")
        return False
    log.warning("%s holds a run that stopped before its first checkpoint: starting it again from step 0", run_dir)
    if distributed.launched_rank() == 0:  # the other ranks only check
        for entry in entries:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)
    return False


def check_same_run(run_dir: Path, cfg: TrainConfig, data_record: dict[str, Any]) -> None:
    """--resume: refuse other data or other options than the run's, listing every difference."""
    try:
        record = json.loads((run_dir / CONFIG).read_text())
        saved, saved_data = dict(record["config"]), dict(record["data"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SelfmetaError(f"--resume: {run_dir / CONFIG} is missing or unreadable ({exc})".splitlines()[0]) from None
    modality = str(record.get("modality", "image"))
    try:
        before = TrainConfig.from_dict(saved).effective(modality)
    except SelfmetaError as exc:
        raise SelfmetaError(f"--resume: {run_dir / CONFIG} holds options this version refuses ({exc})") from None
    now = cfg.effective(modality)
    differ = [f"{k}={json.dumps(now.get(k))} (the run has {json.dumps(before.get(k))})"
              for k in sorted(set(now) | set(before)) if k not in LENGTH_OPTIONS and now.get(k) != before.get(k)]
    differ += [f"data {k} {json.dumps(data_record.get(k))} (the run has {json.dumps(saved_data.get(k))})"
               for k in sorted(set(data_record) | set(saved_data)) if data_record.get(k) != saved_data.get(k)]
    if differ:
        raise SelfmetaError(f"--resume: {run_dir} was trained with other data or options: {'; '.join(differ)}. "
                            "Resume with the run's own (only epochs, steps and time_budget may change), or start "
                            "a new run with another --out")


def train(
    cfg: TrainConfig,
    data: Dataset,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    data_info: dict[str, Any] | None = None,
    monitor: Callable[[int, float, Method], bool] | None = None,
    notes: dict[str, Any] | None = None,
    start_from: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``cfg.method`` on ``data``. With ``run_dir=None`` nothing is written (the Python API's use).

    ``monitor(step, elapsed, method)``, called after every optimizer step, stops training by returning True
    (``stopped_by="monitor"``; selfmeta tune prunes its pilots so). ``notes`` go into ``config.json`` as they
    are (selfmeta tune: its trials). ``start_from``: the method's state (``method.state_dict()`` of a run of
    the same method and data) to start from instead of the seed's initialization, with a new optimizer and
    schedule (selfmeta tune continues its winning pilot so)."""
    run_dir = Path(run_dir) if run_dir is not None else None
    cfg = cfg.resolved(len(data), int(os.environ.get("WORLD_SIZE", "1")))
    saved = run_dir / data.spec.preprocessor.file if run_dir is not None and resume and data.spec.preprocessor else None
    data = fit_preprocessor(cfg, data, saved)  # text: the tokenizer, trained on this split (or the run's own)
    cfg, view_rule = adapt_views(cfg, data)   # e.g. symbols: no flip (Views.data_defaults)
    data_record = {**(data_info or {"name": data.name}), "items": len(data), "input_shape": list(data.input_shape)}
    if run_dir is not None:
        resume = prepare_run_dir(run_dir, resume, cfg, data_record)
    elif resume:
        raise SelfmetaError("resume needs the run directory to resume from")
    device = resolve_device(cfg.device)
    own_group = distributed.init_from_env(device)
    finished = False
    try:
        result = _train(cfg, data, run_dir, resume, progress, data_record, view_rule, monitor, notes or {}, start_from)
        finished = True
        return result
    finally:
        if own_group:
            distributed.shutdown(wait=finished)  # after an error other ranks may be gone: no barrier


def _train(
    cfg: TrainConfig, data: Dataset, run_dir: Path | None, resume: bool, progress: bool, data_record: dict[str, Any],
    view_rule: dict[str, Any], monitor: Callable[[int, float, Method], bool] | None, notes: dict[str, Any],
    start_from: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    device = resolve_device(cfg.device)  # picks the local GPU once the group exists
    rank, world = distributed.rank(), distributed.world_size()
    main = distributed.is_main()

    plan = batch_plan(cfg, data, world)
    steps_per_epoch = plan.steps_per_epoch
    total_steps = cfg.steps if cfg.steps is not None else (
        cfg.epochs * steps_per_epoch if cfg.epochs is not None else None)

    precision = resolve_precision(cfg.precision, device)  # auto: bf16 only where the hardware has it natively
    seed_everything(cfg.seed)
    modality = data.spec
    method = build_method(cfg, data)
    if start_from is not None and not resume:
        method.load_state_dict(start_from)
    method = method.to(device).to(memory_format=modality.layout(cfg.channels_last))
    optimizer = build_optimizer(cfg.optimizer, method, cfg.base_lr, cfg.decay)

    step, elapsed_before = 0, 0.0
    last_saved: int | None = None  # the step of the newest checkpoint on disk
    if resume and run_dir is not None:
        state = load_checkpoint(run_dir / CHECKPOINT)
        try:
            method.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise SelfmetaError(
                f"{run_dir / CHECKPOINT} does not fit this data and configuration ({exc})".splitlines()[0]
            ) from None
        step, elapsed_before = int(state["step"]), float(state["elapsed"])
        last_saved = step
        set_rng_state(state["rng"][rank % len(state["rng"])], device)
        if state.get("finished"):
            log.info("%s already finished at step %d", run_dir, step)
    else:
        torch.manual_seed(cfg.seed + rank)  # different augmentations on every rank

    model: torch.nn.Module = method
    if world > 1:
        model = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)

    description = describe(cfg, data)
    if run_dir is not None and main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir)
        record = {
            "config": cfg.to_dict(),
            "data": data_record,
            "input_shape": list(data.input_shape),
            "modality": data.modality,
            "world_size": world,
            "precision_used": precision,
            "device": device.type if device.type == "cuda" else f"cpu ({cpu_description()})",
            "selfmeta_version": __version__,
            "torch_version": torch.__version__,
            "commands": [" ".join(sys.argv)],
        }
        if view_rule:
            record["views_for_this_data"] = view_rule  # options taken from the data's rule, and why
        record.update(notes)
        if resume and (run_dir / CONFIG).is_file():  # keep how the run was started, add how it was resumed
            before = json.loads((run_dir / CONFIG).read_text())
            record["commands"] = before.get("commands", []) + record["commands"]
            if "views_for_this_data" in before:  # (resumed, the options are the run's own: no rule applies)
                record["views_for_this_data"] = before["views_for_this_data"]
        atomic_write(run_dir / CONFIG, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
        if data.preprocessor is not None:  # a readable copy; resume reads it back, the weights carry their own
            text = data.preprocessor.to_json()
            atomic_write(run_dir / data.preprocessor.file, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    metrics = _Metrics(run_dir if main else None, step if resume else -1)

    def checkpoint(finished: bool, elapsed: float) -> None:
        nonlocal last_saved
        states = distributed.all_gather_no_grad(rng_state(device).to(device))  # every rank's, concatenated
        rng = list(states.cpu().chunk(world))
        if run_dir is None or not main:
            return
        save_checkpoint(
            run_dir / CHECKPOINT,
            {"model": method.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "elapsed": elapsed,
             "rng": rng, "finished": finished},
        )
        save_weights(run_dir / WEIGHTS, method.backbone.state_dict(), description)
        last_saved = step

    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    )
    probe = QualityProbe(data, cfg.quality_sample, cfg.seed) if main and cfg.quality_every != 0 else None
    quality_every = cfg.quality_every or max(steps_per_epoch, 100)
    quality: dict[str, float] = {}
    quality_step = metrics.quality[-1]["step"] if metrics.quality else -1  # resumed: the kept records

    def measure_quality() -> dict[str, float]:
        values = probe(method, device, cfg.channels_last, autocast)
        metrics.write({"step": step, "epoch": round(step / steps_per_epoch, 4), **values})
        return values
    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True, disable=None)

    start = time.perf_counter()
    elapsed = elapsed_before
    stopped_by = "epochs"
    window_start, window_steps = time.perf_counter(), 0
    current_epoch = -1
    try:
        while True:
            if total_steps is not None and step >= total_steps:
                stopped_by = "steps" if cfg.steps is not None else "epochs"
                break
            elapsed = elapsed_before + time.perf_counter() - start
            out_of_time = cfg.time_budget is not None and elapsed >= cfg.time_budget
            if distributed.any_rank(out_of_time, device):
                stopped_by = "time_budget"
                break
            epoch = step // steps_per_epoch
            if epoch != current_epoch:  # a new epoch, or the first step after resuming
                current_epoch = epoch
                method.on_epoch_start(epoch, data)
                method.train()
            index = plan.indices(step, rank)
            x = modality.to_model(data.take(index), device, cfg.channels_last)
            if plan.augment:  # tasks whose episodes repeat items: every copy becomes its own view
                x = method.views(x).contiguous(memory_format=modality.layout(cfg.channels_last))

            progress_frac = max(
                step / total_steps if total_steps else 0.0,
                elapsed / cfg.time_budget if cfg.time_budget else 0.0,
            )
            lr = cfg.base_lr * lr_factor(progress_frac, cfg.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr

            with autocast:
                out = model(x, index.to(device))
            loss = out.loss
            if not torch.isfinite(loss.detach()):
                if run_dir is None:
                    kept = ""
                elif last_saved is None:
                    kept = f"; no checkpoint was written yet, so rerunning the command starts {run_dir} again"
                else:
                    kept = f"; the last good checkpoint (step {last_saved}) is kept in {run_dir}"
                raise SelfmetaError(f"the loss became {float(loss.detach())} at step {step}; training stopped{kept}. "
                                    "Try a lower lr or fp32")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            method.on_step_end(progress_frac)
            window_steps += 1
            if bar is not None:
                bar.update(1)
            if step % cfg.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                record = {
                    "step": step,
                    "epoch": round(step / steps_per_epoch, 4),
                    "loss": float(loss.detach()),
                    "lr": lr,
                    "elapsed": round(elapsed_before + now - start, 3),
                    "samples_per_s": round(window_steps * plan.items_per_step / (now - window_start), 1),
                    **out.logs,
                }
                window_start, window_steps = now, 0
                if main:
                    metrics.write(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
            if probe is not None and step % quality_every == 0:
                quality, quality_step = measure_quality(), step
            if monitor is not None and monitor(step, elapsed_before + time.perf_counter() - start, method):
                stopped_by = "monitor"
                break
            if step % steps_per_epoch == 0:
                checkpoint(False, elapsed_before + time.perf_counter() - start)
        if probe is not None and step > 0 and quality_step != step:
            quality = measure_quality()  # the signals of the weights saved below
        elapsed = elapsed_before + time.perf_counter() - start
        checkpoint(True, elapsed)
        if world > 1:
            checksums = distributed.all_gather_floats(_param_checksum(method), device)
            if main and run_dir is not None:
                atomic_write(run_dir / "ranks.json", lambda tmp: tmp.write_text(json.dumps({"param_checksums": checksums})))
    finally:
        if bar is not None:
            bar.close()
        metrics.close()
    method.eval()
    return TrainResult(method, step, step / steps_per_epoch, elapsed, stopped_by, metrics.history, description,
                       quality, metrics.quality)


def _param_checksum(module: torch.nn.Module) -> float:
    """A float that differs between ranks whose parameters differ (used to check ranks stay in sync)."""
    with torch.no_grad():
        return float(sum(p.double().sum() * (i + 1) for i, p in enumerate(module.parameters())))
