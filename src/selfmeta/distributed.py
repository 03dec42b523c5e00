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


def launched_rank() -> int:
    """This process's rank as torchrun set it (``RANK``), also before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def init_from_env(device: torch.device) -> bool:
    """Join the process group that torchrun describes; a no-op when WORLD_SIZE is unset or 1.

    Returns True when this call created the group: the caller then ends it with :func:`shutdown`.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return True
    return False


def shutdown(wait: bool = True) -> None:
    """End the process group: after a barrier (``wait``), so that no rank exits while another still talks
    to it. Leaving the group to the interpreter's exit makes gloo abort processes (SIGABRT) at random."""
    if is_distributed():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every rank in rank order -> (W*B, ...); gradients flow back to each rank.

    Backward sums the gradient of the gathered tensor over the ranks and returns this rank's rows, so that
    with DDP's averaging a loss computed on the gathered batch gets its full-batch gradient. (Not
    ``torch.distributed.nn.functional.all_gather``: importing that module once a gloo group exists makes
    about one process exit in five abort with SIGABRT on torch 2.13, and it is deprecated.)
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (W*B, ...)
        x = x.contiguous()
        out = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(out, x)
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # (W*B, ...) -> (B, ...)
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's loss depends on this rank's rows
        b = grad.shape[0] // world_size()
        return grad[rank() * b : (rank() + 1) * b]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any rank (so that every rank stops at the same step)."""
    if not is_distributed():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every rank in rank order -> (W*B, ...), on x's device, without gradient.

    For tensors that need no gradient (MoCo's keys and key batches). Every rank must pass the same shape.
    """
    if not is_distributed():
        return x
    x = x.detach().contiguous()
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x)
    return torch.cat(out, dim=0)


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``t`` in place with rank ``src``'s copy (same shape and dtype on every rank); returns it.

    For random draws that must agree across ranks (MoCo's shuffling permutation).
    """
    if is_distributed():
        dist.broadcast(t, src=src)
    return t


def all_gather_floats(value: float, device: torch.device) -> list[float]:
    """Every rank's ``value``, in rank order."""
    return all_gather_no_grad(torch.tensor([value], dtype=torch.float64, device=device)).tolist()
