"""Shared fixtures. Tests that read ../shared/data skip with a reason where it is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SELFMETA_SHARED_DATA", REPO.parent / "shared" / "data"))

# Every model in the tests is tiny: one intra-op thread is as fast as two and leaves the other core free.
torch.set_num_threads(1)


def shared(relative: str) -> Path:
    """Path to a file of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"needs {relative} from the shared data folder, absent at {SHARED_DATA}")
    return path


@pytest.fixture
def cli(tmp_path):
    """Run ``selfmeta ARGS`` as a user types it, in tmp_path; returns the CompletedProcess."""
    exe = shutil.which("selfmeta") or str(Path(sys.executable).with_name("selfmeta"))

    def run(*args: str, check: bool = False) -> subprocess.CompletedProcess:
        proc = subprocess.run([exe, *map(str, args)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"selfmeta {' '.join(map(str, args))} failed:\n{proc.stderr}")
        return proc

    return run


def _rank_main(rank: int, work, world: int, init_file: str, out_dir: str) -> None:
    """One spawned process: join a gloo group, save ``work(rank, world)``, leave the group."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = work(rank, world)
        result["world"] = dist.get_world_size()
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture
def spawn_ranks(tmp_path):
    """Run ``work(rank, world) -> dict of tensors`` in ``world`` gloo processes; return every rank's dict.

    ``work`` must be picklable: a module-level function, or a functools.partial of one.
    """

    def run(work, world: int = 2) -> list[dict]:
        import torch.multiprocessing as mp

        mp.spawn(_rank_main, args=(work, world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
        ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
        assert all(r.pop("world") == world for r in ranks)
        return ranks

    return run

