"""Engine: the learning-rate schedule, LARS, parameter groups, atomic files, checkpoints, the typed config
and the training loop (stopping, determinism, resume, refusals, NaN handling)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from selfmeta.data import load_data
from selfmeta.engine import TrainConfig, train
from selfmeta.engine.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from selfmeta.files import atomic_write
from selfmeta.engine.config import apply_overrides
from selfmeta.engine.optim import LARS, build_optimizer, lr_factor, param_groups
from selfmeta.errors import SelfmetaError
from selfmeta.methods.base import StepOutput
from selfmeta.meta.protonet import ProtoNet
from selfmeta.methods.simclr import SimCLR

STEPS_PER_EPOCH = 1438 // 128  # digits train split, batch 128



@pytest.fixture(scope="module")
def digits():
    return load_data("digits", "train")


def small_config(**changes) -> TrainConfig:
    values = dict(epochs=1, batch_size=128, view_options={"hflip": 0}, log_every=1, device="cpu")
    values.update(changes)
    return TrainConfig(**values)


def weights(result) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in result.method.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different[:5]}"


def metric_steps(run_dir: Path) -> list[int]:
    """The steps of the training records (the label-free quality records are apart: no loss)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("warmup", [0.05, 0.1, 0.3])
def test_lr_factor_warmup_then_cosine(warmup):
    assert lr_factor(0.0, warmup) == 0.0
    assert lr_factor(warmup / 2, warmup) == pytest.approx(0.5)
    assert lr_factor(warmup, warmup) == pytest.approx(1.0)
    assert lr_factor(1.0, warmup) == pytest.approx(0.0, abs=1e-12)
    rising = [lr_factor(p * warmup, warmup) for p in torch.linspace(0, 1, 20).tolist()[:-1]]
    assert all(a < b for a, b in zip(rising, rising[1:]))
    falling = [lr_factor(p, warmup) for p in torch.linspace(warmup, 1, 50).tolist()]
    assert all(a > b for a, b in zip(falling, falling[1:]))
    # Half-way through the cosine the factor is one half.
    assert lr_factor(warmup + (1 - warmup) / 2, warmup) == pytest.approx(0.5)


def test_lr_factor_without_warmup_and_out_of_range():
    assert lr_factor(0.0, 0.0) == 1.0
    assert lr_factor(0.5, 0.0) == pytest.approx(0.5)
    assert lr_factor(1.0, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(-0.3, 0.0) == 1.0  # clamped into [0, 1]
    assert lr_factor(1.7, 0.1) == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------- LARS


def test_lars_matches_hand_computation():
    lr, momentum, eta, wd = 0.5, 0.9, 0.01, 0.1
    w = nn.Parameter(torch.tensor([[3.0, -4.0], [1.0, 2.0]], dtype=torch.float64))
    b = nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64))
    opt = LARS(
        [{"params": [w], "weight_decay": wd, "lars": True}, {"params": [b], "weight_decay": 0.0, "lars": False}],
        lr=lr, momentum=momentum, eta=eta,
    )
    grads_w = [torch.tensor([[0.5, 1.0], [-2.0, 0.25]], dtype=torch.float64),
               torch.tensor([[-1.0, 0.5], [0.0, 3.0]], dtype=torch.float64)]
    grads_b = [torch.tensor([0.2, -0.4], dtype=torch.float64), torch.tensor([1.0, 0.5], dtype=torch.float64)]

    w_ref, b_ref = w.detach().clone(), b.detach().clone()
    buf_w = buf_b = None
    for gw, gb in zip(grads_w, grads_b):
        # Hand computation, LARS group: g <- g + wd w; g <- g * eta |w| / |g|; buf <- m buf + g; w <- w - lr buf
        g = gw + wd * w_ref
        g = g * (eta * w_ref.norm() / g.norm())
        buf_w = g.clone() if buf_w is None else momentum * buf_w + g
        w_ref = w_ref - lr * buf_w
        # Plain SGD with momentum for the lars=False group.
        buf_b = gb.clone() if buf_b is None else momentum * buf_b + gb
        b_ref = b_ref - lr * buf_b

        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        torch.testing.assert_close(w.detach(), w_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b.detach(), b_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(opt.state[w]["momentum"], buf_w)
    torch.testing.assert_close(opt.state[b]["momentum"], buf_b)


def test_lars_skips_parameters_without_gradient_and_zero_weights():
    w = nn.Parameter(torch.zeros(3))
    frozen = nn.Parameter(torch.ones(3))
    opt = LARS([{"params": [w, frozen], "weight_decay": 0.0, "lars": True}], lr=0.1)
    w.grad = torch.tensor([1.0, 2.0, 3.0])
    opt.step()
    # |w| = 0: the trust ratio falls back to 1, so the update is plain SGD.
    torch.testing.assert_close(w.detach(), torch.tensor([-0.1, -0.2, -0.3]))
    torch.testing.assert_close(frozen.detach(), torch.ones(3))


# ------------------------------------------------------------------------------------------ param groups


def test_param_groups_no_decay_on_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 3), nn.LayerNorm(3))
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and decay["lars"] is True
    assert no_decay["weight_decay"] == 0.0 and no_decay["lars"] is False
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(decay["params"]) == {id(model[0].weight), id(model[3].weight)}
    assert ids(no_decay["params"]) == {
        id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[3].bias), id(model[4].weight),
        id(model[4].bias),
    }


def test_param_groups_leave_out_frozen_parameters():
    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    decay, no_decay = param_groups(model, 0.1)
    assert [id(p) for p in decay["params"]] == [id(model.weight)]
    assert no_decay["params"] == []


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("lars", LARS)])
def test_build_optimizer_keeps_the_groups(name, cls):
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    opt = build_optimizer(name, model, lr=0.01, weight_decay=0.2)
    assert isinstance(opt, cls)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.2, 0.0]
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]
    if name == "lars":
        assert [g["lars"] for g in opt.param_groups] == [True, False]


# ----------------------------------------------------------------------------------------- atomic files


def test_atomic_write_keeps_the_target_when_the_write_fails(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old content")

    def failing(tmp: Path) -> None:
        tmp.write_text("half-written")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_atomic_write_replaces_the_target_without_leftovers(tmp_path):
    target = tmp_path / "sub" / "state.json"
    atomic_write(target, lambda tmp: tmp.write_text("one"))
    atomic_write(target, lambda tmp: tmp.write_text("two"))
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


# ------------------------------------------------------------------------------------------ checkpoints


class Crash(Exception):
    """Stands for the process dying mid-run."""


class Payload:
    """An arbitrary Python object: a checkpoint holding one must never be unpickled."""

    def __init__(self) -> None:
        self.value = 42


def test_load_checkpoint_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {"w": torch.ones(2)}, "payload": Payload()}, path)
    with pytest.raises(SelfmetaError, match="unreadable checkpoint"):
        load_checkpoint(path)


def test_checkpoint_round_trip_and_missing_or_corrupt_files(tmp_path):
    path = tmp_path / "checkpoint.pt"
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "step": 7, "elapsed": 1.5, "finished": False,
             "rng": [torch.get_rng_state()]}
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["elapsed"] == 1.5 and loaded["finished"] is False
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert torch.equal(loaded["rng"][0], state["rng"][0])

    with pytest.raises(SelfmetaError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01 not a checkpoint")
    with pytest.raises(SelfmetaError):
        load_checkpoint(tmp_path / "garbage.pt")


def test_weights_round_trip_tensors_and_description(tmp_path):
    path = tmp_path / "encoder.safetensors"
    tensors = {"normalize.mean": torch.rand(1, 3, 1, 1), "encoder.weight": torch.randn(4, 3).t(),  # non-contiguous
               "encoder.steps": torch.tensor(5)}
    description = {"encoder": "conv4", "input_shape": [3, 8, 8], "classes": ["a", "b"], "encoder_options": {"w": 2}}
    save_weights(path, tensors, description)
    loaded, meta = load_weights(path)
    assert meta == description
    assert loaded.keys() == tensors.keys()
    for key, value in tensors.items():
        assert torch.equal(loaded[key], value)


def test_load_weights_refuses_foreign_files(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("this is not a safetensors file")
    with pytest.raises(SelfmetaError, match="not a selfmeta weights file"):
        load_weights(text)

    # A valid safetensors file without selfmeta's description is refused too.
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, str(plain))
    with pytest.raises(SelfmetaError, match="not a selfmeta weights file"):
        load_weights(plain)

    with pytest.raises(SelfmetaError, match="no weights"):
        load_weights(tmp_path / "absent.safetensors")


# ---------------------------------------------------------------------------------------------- config


def test_config_unknown_option_lists_valid_ones():
    with pytest.raises(SelfmetaError) as info:
        TrainConfig.from_dict({"epoch": 3})
    message = str(info.value)
    assert "'epoch'" in message
    for name in ("epochs", "batch_size", "optimizer", "method_options", "view_options"):
        assert name in message


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"optimizer": "sgd"}, "option optimizer takes one of: adamw, lars, got 'sgd'"),
        ({"precision": "fp16"}, "option precision takes one of: auto, fp32, bf16, got 'fp16'"),
        ({"device": "tpu"}, "option device takes one of: auto, cpu, cuda, got 'tpu'"),
        ({"epochs": 0}, "option epochs takes null or an integer >= 1, got 0"),
        ({"epochs": None}, "give epochs, steps or a time budget"),
        ({"time_budget": -1.0}, "option time_budget takes null or a number > 0, got -1.0"),
        ({"time_budget": float("nan")}, "option time_budget takes null or a number > 0, got nan"),
        ({"time_budget": float("inf")}, "option time_budget takes null or a number > 0, got inf"),
        ({"batch_size": 1}, "option batch_size takes null or an integer >= 2, got 1"),
        ({"batch_size": 64.5}, "option batch_size takes null or an integer >= 2, got 64.5"),
        ({"lr": "fast"}, "option lr takes null or a number > 0, got 'fast'"),
        ({"lr": -1}, "option lr takes null or a number > 0, got -1"),
        ({"lr": float("nan")}, "option lr takes null or a number > 0, got nan"),
        ({"weight_decay": "x"}, "option weight_decay takes null or a number >= 0, got 'x'"),
        ({"seed": "abc"}, "option seed takes an integer >= 0, got 'abc'"),
        ({"log_every": 0}, "option log_every takes an integer >= 1, got 0"),
        ({"encoder": [1]}, "option encoder takes text, got [1]"),
        ({"channels_last": "no"}, "option channels_last takes true or false, got 'no'"),
        ({"warmup": 1.0}, "option warmup takes a number >= 0 and < 1, got 1.0"),
        ({"method_options": {"temperature": "abc"}}, "method 'simclr' option temperature takes a number > 0, got 'abc'"),
        ({"method_options": {"temperature": -1}}, "method 'simclr' option temperature takes a number > 0, got -1"),
        ({"encoder_options": {"width": 0}}, "encoder 'conv4' option width takes an integer >= 1, got 0"),
        ({"tasks": "cactus", "method": "protonet", "task_options": {"clusters": "abc"}},
         "tasks 'cactus' option clusters takes an integer >= 2, got 'abc'"),
        ({"task_options": {"clusters": 3}}, "tasks.* options apply to episodic training"),
        ({"method_options": [1]}, "option method_options takes a table of options, got [1]"),
    ],
)
def test_config_rejects_bad_values(values, fragment):
    with pytest.raises(SelfmetaError) as info:
        TrainConfig.from_dict(values)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_config_converts_integral_numbers_and_lists():
    cfg = TrainConfig.from_dict({"batch_size": 64.0, "epochs": 2.0, "lr": 1, "encoder": "mlp",
                                 "encoder_options": {"widths": [8.0, 4]}})
    assert cfg.batch_size == 64 and isinstance(cfg.batch_size, int) and cfg.epochs == 2
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.encoder_options == {"widths": (8, 4)}


def test_config_defaults_scale_with_batch_and_optimizer():
    assert TrainConfig(batch_size=512).base_lr == pytest.approx(4e-3)
    assert TrainConfig(optimizer="lars", batch_size=128).base_lr == pytest.approx(0.15)
    assert TrainConfig(lr=0.7).base_lr == 0.7
    assert TrainConfig().decay == 1e-4 and TrainConfig(optimizer="lars").decay == 1e-6
    cfg = TrainConfig(method_options={"temperature": 0.5})
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_apply_overrides_parses_values_and_nested_groups():
    base = {"epochs": 5, "encoder": "mlp", "view_options": {"hflip": 0.5}}
    values = apply_overrides(base, [
        "lr=1e-3", "batch_size=64", "optimizer=lars", "time_budget=null", "channels_last=false",
        "method.temperature=0.5", "views.crop_scale=[0.4, 1.0]", "encoder.widths=[32, 16]", "views.jitter=0",
    ])
    assert values["lr"] == 1e-3 and isinstance(values["lr"], float)
    assert values["batch_size"] == 64 and isinstance(values["batch_size"], int)
    assert values["optimizer"] == "lars"
    assert values["time_budget"] is None and values["channels_last"] is False
    assert values["method_options"] == {"temperature": 0.5}
    assert values["view_options"] == {"hflip": 0.5, "crop_scale": [0.4, 1.0], "jitter": 0}
    assert values["encoder_options"] == {"widths": [32, 16]}
    assert base == {"epochs": 5, "encoder": "mlp", "view_options": {"hflip": 0.5}}  # the input is not modified
    cfg = TrainConfig.from_dict(values)
    assert cfg.optimizer == "lars" and cfg.method_options["temperature"] == 0.5


@pytest.mark.parametrize("item, fragment", [
    ("model.width=3", "unknown option group 'model'; valid: method, views, encoder"),
    ("lr", "expected key=value"),
    ("=3", "expected key=value"),
])
def test_apply_overrides_rejects_bad_items(item, fragment):
    with pytest.raises(SelfmetaError, match=fragment):
        apply_overrides({}, [item])


# ---------------------------------------------------------------------------------------------- training


@pytest.mark.slow
def test_training_lowers_the_loss(digits):
    result = train(small_config(epochs=15), digits, progress=False)
    assert result.steps == 15 * STEPS_PER_EPOCH and result.stopped_by == "epochs"
    losses = [r["loss"] for r in result.history]
    assert len(losses) == result.steps and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, (first, last)


def test_gradients_are_clipped_at_grad_clip_and_leo_prefers_it(digits):
    norms = {}

    def monitor(step, elapsed, method):  # after the step: the gradients it took are still there
        grads = [p.grad for p in method.parameters() if p.grad is not None]
        norms[step] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        return False

    for clip in (None, 1e-3):
        norms.clear()
        train(small_config(steps=2, grad_clip=clip), digits, progress=False, monitor=monitor)
        assert (max(norms.values()) <= 1e-3 * 1.0001) == (clip is not None), norms
    assert TrainConfig(method="leo", tasks="labels", steps=1).resolved(100).grad_clip == 0.1
    assert TrainConfig(method="leo", tasks="labels", steps=1, grad_clip=0).resolved(100).grad_clip == 0


@pytest.mark.slow
def test_time_budget_stops_and_saves(digits, tmp_path):
    run = tmp_path / "run"
    start = time.perf_counter()
    result = train(small_config(epochs=None, time_budget=2.0, log_every=5), digits, run, progress=False)
    wall = time.perf_counter() - start
    assert result.stopped_by == "time_budget"
    assert 2.0 <= result.elapsed < 4.0
    assert wall < 20
    assert result.steps > 0
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == result.steps and state["finished"] is True
    saved, description = load_weights(run / "encoder.safetensors")
    assert description["encoder"] == "conv4" and description["input_shape"] == [1, 8, 8]
    backbone = result.method.backbone.state_dict()
    assert all(torch.equal(saved[k], backbone[k].cpu()) for k in saved)


def test_same_seed_same_weights(digits):
    a = weights(train(small_config(seed=3), digits, progress=False))
    b = weights(train(small_config(seed=3), digits, progress=False))
    assert_same_weights(a, b)
    c = weights(train(small_config(seed=4), digits, progress=False))
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# Episodes: 4 tasks of 5 ways x (1 + 5) items = 120 items a step, so 1438 // 120 = 11 steps an epoch as well.
EPISODIC = {"method": "protonet", "tasks": "labels", "ways": 5, "shots": 1, "queries": 5, "tasks_per_step": 4}


@pytest.mark.slow
@pytest.mark.parametrize("method_cls,changes", [(SimCLR, {}), (ProtoNet, EPISODIC)], ids=["items", "episodes"])
def test_resume_after_an_interruption_replays_the_same_run(digits, tmp_path, monkeypatch, method_cls, changes):
    cfg = small_config(epochs=4, log_every=1, quality_every=STEPS_PER_EPOCH, **changes)
    full = train(cfg, digits, tmp_path / "full", progress=False)

    # Interrupt a second run mid-epoch (step 15 of 44): the last checkpoint is the end of epoch 1 (step 11).
    original = method_cls.forward
    calls = {"n": 0}

    def crashing(self, x, index):
        calls["n"] += 1
        if calls["n"] > 15:
            raise Crash("killed")
        return original(self, x, index)

    run = tmp_path / "run"
    monkeypatch.setattr(method_cls, "forward", crashing)
    with pytest.raises(Crash):
        train(cfg, digits, run, progress=False)
    monkeypatch.setattr(method_cls, "forward", original)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == STEPS_PER_EPOCH
    assert metric_steps(run) == list(range(1, 16))

    resumed = train(cfg, digits, run, resume=True, progress=False)
    assert resumed.steps == full.steps == 4 * STEPS_PER_EPOCH
    assert_same_weights(weights(full), weights(resumed))
    steps = metric_steps(run)
    assert steps == list(range(1, full.steps + 1))  # strictly increasing, no step logged twice
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}
    assert [losses[s] for s in steps] == [r["loss"] for r in full.history]
    quality = [r for r in records if "rankme" in r]  # every epoch's, as in the run that was not interrupted
    assert quality == full.quality_history and len(quality) == 4
    assert load_checkpoint(run / "checkpoint.pt")["finished"] is True


@pytest.mark.slow
def test_resume_with_more_epochs(digits, tmp_path):
    run = tmp_path / "run"
    first = train(small_config(epochs=2, log_every=5), digits, run, progress=False)
    assert first.steps == 2 * STEPS_PER_EPOCH
    second = train(small_config(epochs=4, log_every=5), digits, run, resume=True, progress=False)
    assert second.steps == 4 * STEPS_PER_EPOCH
    assert load_checkpoint(run / "checkpoint.pt")["step"] == second.steps
    steps = metric_steps(run)
    assert steps == sorted(set(steps)) and steps[-1] == second.steps
    assert [s for s in steps if s > first.steps] == [25, 30, 35, 40, 44]


def test_existing_run_dir_is_refused_and_left_alone(digits, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("precious")
    (run / "sub").mkdir()
    (run / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(run)
    with pytest.raises(SelfmetaError, match="already exists and holds files of its own"):
        train(small_config(), digits, run, progress=False)
    assert snapshot(run) == before
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "sub"]


def test_resume_without_checkpoint_is_refused(digits, tmp_path):
    with pytest.raises(SelfmetaError, match="there is no run in .* to resume"):
        train(small_config(), digits, tmp_path / "run", resume=True, progress=False)
    assert not (tmp_path / "run").exists()


def test_batch_larger_than_the_data_is_refused_before_creating_the_run(digits, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(SelfmetaError, match="larger than the data"):
        train(small_config(batch_size=len(digits) + 1), digits, run, progress=False)
    assert not run.exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path, monkeypatch):
    original = SimCLR.forward
    calls = {"n": 0}

    def diverging(self, x, index):
        calls["n"] += 1
        out = original(self, x, index)
        if calls["n"] > STEPS_PER_EPOCH + 3:
            return StepOutput(out.loss * float("nan"), out.logs)
        return out

    monkeypatch.setattr(SimCLR, "forward", diverging)
    run = tmp_path / "run"
    with pytest.raises(SelfmetaError) as info:
        train(small_config(epochs=3, log_every=1), digits, run, progress=False)
    message = str(info.value)
    assert "checkpoint" in message and f"step {STEPS_PER_EPOCH})" in message and str(run) in message
    assert "\n" not in message
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == STEPS_PER_EPOCH and state["finished"] is False
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert metric_steps(run) == list(range(1, STEPS_PER_EPOCH + 4))


def test_huge_learning_rate_is_reported_not_silently_trained(digits):
    with pytest.raises(SelfmetaError, match="the loss became"):
        train(small_config(epochs=3, lr=1e30, warmup=0.0), digits, progress=False)


def test_resume_with_data_that_does_not_fit_the_checkpoint(tmp_path):
    from selfmeta.data.dataset import Dataset

    def table(d: int) -> Dataset:
        return Dataset(torch.randn(64, d), modality="table")

    cfg = TrainConfig(encoder="mlp", epochs=1, batch_size=32, log_every=1)
    train(cfg, table(10), tmp_path / "run", progress=False)
    cfg2 = TrainConfig(encoder="mlp", epochs=2, batch_size=32, log_every=1)
    with pytest.raises(SelfmetaError, match=r"other data or options: data input_shape \[12\] \(the run has \[10\]\)"):
        train(cfg2, table(12), tmp_path / "run", resume=True, progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2  # the run is untouched


def test_hooks_and_index_reach_the_method(digits, tmp_path, monkeypatch):
    from selfmeta.encoders import to_unit

    seen = {"epochs": [], "progress": [], "index_ok": []}
    original = SimCLR.forward

    def forward(self, x, index):
        seen["index_ok"].append(torch.equal(x, to_unit(digits.x[index]).contiguous(memory_format=torch.channels_last)))
        return original(self, x, index)

    monkeypatch.setattr(SimCLR, "forward", forward)
    monkeypatch.setattr(SimCLR, "on_epoch_start", lambda self, epoch, data: seen["epochs"].append((epoch, len(data))))
    monkeypatch.setattr(SimCLR, "on_step_end", lambda self, progress: seen["progress"].append(progress))
    train(small_config(epochs=3), digits, tmp_path / "run", progress=False)
    assert seen["epochs"] == [(0, len(digits)), (1, len(digits)), (2, len(digits))]
    assert all(seen["index_ok"]) and len(seen["index_ok"]) == 3 * STEPS_PER_EPOCH
    progress = seen["progress"]
    assert len(progress) == 3 * STEPS_PER_EPOCH and progress == sorted(progress)
    assert progress[0] == 0.0 and progress[-1] == pytest.approx(1 - 1 / (3 * STEPS_PER_EPOCH))
    # Resuming mid-training calls on_epoch_start again for the epoch it resumes in.
    seen["epochs"].clear()
    train(small_config(epochs=4), digits, tmp_path / "run", resume=True, progress=False)
    assert seen["epochs"] == [(3, len(digits))]
