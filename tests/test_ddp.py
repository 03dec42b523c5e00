"""Data-parallel training on the CPU: two processes under torchrun stay in sync and write once; the
differentiable gather gives the full-batch NT-Xent gradient."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from selfmeta import distributed
from selfmeta.objectives import nt_xent

pytestmark = pytest.mark.slow

TORCHRUN = Path(sys.executable).with_name("torchrun")
TEMPERATURE = 0.3


def test_torchrun_two_cpu_processes(tmp_path):
    if not TORCHRUN.is_file():
        pytest.skip(f"torchrun not found next to {sys.executable}")
    run = tmp_path / "RUN"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "selfmeta", "pretrain", "--data", "digits",
         "--out", str(run), "--epochs", "2", "batch_size=64", "views.hflip=0", "log_every=1", "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = 2 * (1438 // (64 * 2))

    checksums = json.loads((run / "ranks.json").read_text())["param_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1], checksums  # the ranks stayed in sync

    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == steps and state["finished"] is True
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0], state["rng"][1])  # one RNG state per rank

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, steps + 1))  # one rank only, no duplicates
    assert [r["step"] for r in records if "rankme" in r][-1] == steps  # the quality of the final weights
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2 and config["config"]["batch_size"] == 64
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and json.loads(summaries[0])["steps"] == steps  # printed by rank 0 only


# Methods trained for a few steps by two processes: every rank must end with the same parameters.
DDP_METHODS = [
    "rotation", "reconstruction", "triplet", "contrastive", "deepcluster", "sela", "dec",
    "moco", "byol", "barlow", "vicreg",
]
EXTRA_OPTIONS = {"dec": ["method.warmup_epochs=0"]}  # place the centroids at once so DEC's term trains
# Episodic training: every rank draws its own episodes, and ends in sync.
DDP_LEARNERS = ["protonet", "maml", "reptile", "psco"]


def _episodes(name: str) -> list[str]:
    if name == "psco":
        return ["--tasks", "umtra", "--ways", "8", "--shots", "1", "--queries", "1", "method.queue_size=64"]
    return ["--ways", "5", "--shots", "1", "--queries", "3"]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """Every method and meta-learner above, a few steps each, in one pair of torchrun processes
    (``tests/ddp_jobs.py``: one start and one gloo group for them all). Their run folders, by name."""
    if not TORCHRUN.is_file():
        pytest.skip(f"torchrun not found next to {sys.executable}")
    root = tmp_path_factory.mktemp("ddp")
    jobs = [["pretrain", "--data", "digits", "--out", str(root / name), "--method", name, "--steps", "3",
             "batch_size=64", "views.hflip=0", "log_every=1", "--no-progress", *EXTRA_OPTIONS.get(name, [])]
            for name in DDP_METHODS]
    jobs += [["metatrain", "--data", "digits", "--out", str(root / name), "--method", name, "--steps", "4",
              "--tasks-per-step", "2", "log_every=1", "views.hflip=0", "--no-progress", *_episodes(name)]
             for name in DDP_LEARNERS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(Path(__file__).with_name("ddp_jobs.py")),
         json.dumps(jobs)], cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: root / name for name in [*DDP_METHODS, *DDP_LEARNERS]}


@pytest.mark.parametrize("name", DDP_METHODS + DDP_LEARNERS)
def test_torchrun_each_method_and_learner(ddp_runs, name):
    run = ddp_runs[name]
    checksums = json.loads((run / "ranks.json").read_text())["param_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1], checksums
    assert json.loads((run / "config.json").read_text())["world_size"] == 2


def _problem(batch: int = 8):
    """The same tiny projection layer and two views of a batch in every process."""
    torch.manual_seed(0)
    layer = nn.Linear(6, 4).double()
    x1 = torch.randn(batch, 6, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(batch, 6, dtype=torch.float64)
    return layer, x1, x2


def _gather_work(rank: int, world: int) -> dict:
    layer, x1, x2 = _problem()
    b = len(x1) // world
    mine = slice(rank * b, (rank + 1) * b)
    z1, z2 = layer(x1[mine]), layer(x2[mine])
    all_z1, all_z2 = distributed.all_gather_with_grad(z1), distributed.all_gather_with_grad(z2)
    loss = nt_xent(z1, z2, TEMPERATURE, all_z1, all_z2, offset=distributed.rank() * b)
    loss.backward()
    return {"loss": loss.detach(), "weight": layer.weight.grad, "bias": layer.bias.grad, "all_z1": all_z1.detach()}


def test_gather_with_grad_gives_the_full_batch_gradient(spawn_ranks):
    world = 2
    ranks = spawn_ranks(_gather_work, world)

    layer, x1, x2 = _problem()
    full_loss = nt_xent(layer(x1), layer(x2), TEMPERATURE)
    full_loss.backward()
    for r in ranks:  # every rank sees every rank's projections, in rank order
        torch.testing.assert_close(r["all_z1"], layer(x1).detach())
    # The full-batch loss is the mean of the per-rank losses; DDP averages the gradients.
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / world, full_loss.detach())
    for name in ("weight", "bias"):
        averaged = sum(r[name] for r in ranks) / world
        torch.testing.assert_close(averaged, getattr(layer, name).grad, rtol=1e-10, atol=1e-12)

    # Control: with only local negatives (no gather) the averaged gradient is not the full-batch one.
    local = []
    for rank in range(world):
        layer_r, x1, x2 = _problem()
        b = len(x1) // world
        mine = slice(rank * b, (rank + 1) * b)
        nt_xent(layer_r(x1[mine]), layer_r(x2[mine]), TEMPERATURE).backward()
        local.append(layer_r.weight.grad)
    assert not torch.allclose(sum(local) / world, layer.weight.grad, rtol=1e-6, atol=1e-8)
