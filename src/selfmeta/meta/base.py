"""The meta-learner contract and its registry.

A meta-learner is a :class:`~selfmeta.methods.Method` trained on episodes instead of item batches: the
engine hands ``forward`` the items of T episodes in episode layout, ``(T * N * (K+Q), ...)`` (see
:mod:`selfmeta.data.episodes`), and the learner recovers support and queries with ``self.spec.split``.
The episode's labels are its layout (row n = class n), so a learner never reads the data's labels: the
same learners train on tasks built from unlabeled data.

Besides the training step, every meta-learner adapts to a new task: ``adapt_predict(support, support_y,
query)`` gives query logits for a batch of episodes; it is the ``finetune`` adaptation of the few-shot
evaluation (MAML's inner loop, Reptile's fine-tuning, nearest prototypes for metric learners).
"""

from __future__ import annotations

import functools
from typing import ClassVar

import torch
from torch import nn

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.methods.base import Method
from selfmeta.registry import Registry


class MetaLearner(Method):
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec) -> None:
        super().__init__(backbone, views)
        self.spec = spec

    def adapt_predict(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """support (T, S, ...), support_y (S,) in [0, N), query (T, Q, ...) -> (T, Q, N) logits."""
        raise NotImplementedError


METALEARNERS: Registry[type[MetaLearner]] = Registry("meta-learner")


def query_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(T, Q, N) logits, (Q,) labels -> (T,) fraction of queries classified correctly in each episode."""
    return (logits.argmax(-1) == labels).float().mean(-1)


def batch_norm_ops(layer: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm with the batch's own statistics, written with plain tensor operations. Differentiable to
    any order under ``torch.func.grad`` nested in autograd, where the fused kernel's double backward loses
    terms (MAML's second-order meta-gradient was off by ~4% with it; see tests/meta/test_learners.py)."""
    dims = [0, *range(2, x.ndim)]                                   # all but the channels
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + layer.eps)
    if layer.affine:
        shape = [1, -1] + [1] * (x.ndim - 2)
        y = y * layer.weight.view(shape) + layer.bias.view(shape)
    return y


class batch_statistics:  # noqa: N801 (a context manager used like a function)
    """Within the block, batch-norm layers normalize with the statistics of the batch at hand (through
    :func:`batch_norm_ops`) and leave their running averages alone. Needed under ``torch.func.vmap`` (an
    in-place update of a shared buffer from a batch of tasks is an error), for exact higher-order gradients,
    and for MAML's transductive batch norm (Finn et al. 2017)."""

    def __init__(self, module: nn.Module) -> None:
        self.layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self) -> None:
        for m in self.layers:
            m.forward = functools.partial(batch_norm_ops, m)  # an instance attribute shadows the class's forward

    def __exit__(self, *exc: object) -> None:
        for m in self.layers:
            del m.forward
