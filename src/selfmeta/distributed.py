"""Data-parallel helpers that do nothing at world size 1.

Launch several processes with torchrun, which sets RANK, LOCAL_RANK and WORLD_SIZE::

    torchrun --standalone --nproc_per_node=2 -m selfmeta pretrain --data ../shared/data/mnist --out runs/ddp

gloo is used on the CPU, NCCL on GPUs.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> None:
    """Join the process group that torchrun describes; a no-op when WORLD_SIZE is unset or 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every rank in rank order -> (W*B, ...); gradients flow back to each rank."""
    if not is_distributed():
        return x
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(x), dim=0)


def all_gather_tensor(t: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's copy of ``t`` (same shape on all ranks), on the CPU, in rank order."""
    if not is_distributed():
        return [t.cpu()]
    t = t.to(device)
    out = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any rank (so that every rank stops at the same step)."""
    if not is_distributed():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_float(value: float, device: torch.device) -> float:
    """Rank 0's value on every rank (wall-clock decisions are made once)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def all_gather_floats(value: float, device: torch.device) -> list[float]:
    if not is_distributed():
        return [value]
    t = torch.tensor([value], dtype=torch.float64, device=device)
    out = [torch.zeros_like(t) for _ in range(world_size())]
    dist.all_gather(out, t)
    return [float(o.item()) for o in out]
