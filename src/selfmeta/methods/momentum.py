"""Moving-average (momentum) target networks, shared by the methods that keep one (MoCo, BYOL).

A target is a deep copy of the online modules whose parameters are frozen (``requires_grad=False``): the
optimizer skips them and DistributedDataParallel does not reduce them. After every optimizer step the
method moves them towards the online parameters with :func:`ema_update_`. Their buffers (batch-norm
running statistics) are updated by their own forward passes in train mode, as in MoCo and BYOL.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module``: same weights, ``requires_grad=False`` on every parameter."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place, for every parameter pair: target <- momentum * target + (1 - momentum) * online.

    ``target`` must be a :func:`momentum_copy` of ``online`` (same parameters, same order).
    """
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    if len(target_params) != len(online_params):
        raise ValueError(f"target has {len(target_params)} parameters, online has {len(online_params)}")
    for t, o in zip(target_params, online_params):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)


def cosine_momentum(progress: float, base: float) -> float:
    """BYOL's target decay rate at ``progress`` in [0, 1] of training (Grill et al. 2020, section 3.2).

    tau = 1 - (1 - base) * (cos(pi * progress) + 1) / 2: ``base`` at the start, rising to 1 at the end.
    """
    progress = min(max(progress, 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2
