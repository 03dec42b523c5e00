"""Reptile: On First-Order Meta-Learning Algorithms (Nichol, Achiam & Schulman, 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import vmap

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.meta.base import METALEARNERS, batch_statistics
from selfmeta.meta.maml import MAML
from selfmeta.methods.base import StepOutput


@METALEARNERS.register("reptile")
class Reptile(MAML):
    """Train on each task with plain SGD for ``inner_steps`` steps from the current initialization theta,
    then move theta towards the mean of the adapted weights phi_t.

    The move is expressed as a loss for the engine's optimizer: L = 1/2 sum ||theta - mean_t phi_t||^2 has
    gradient theta - mean_t phi_t, the Reptile direction (the paper also feeds it to Adam); with plain SGD
    and learning rate epsilon this is theta <- theta + epsilon (mean_t phi_t - theta). The inner loops of
    all tasks run at once under ``vmap``, on each task's support and queries together; adapting to a new
    task (``adapt_predict``) fine-tunes on its support only, from a zero head as in MAML.

    Args:
        inner_steps: SGD steps per task (5 in the paper's Omniglot runs).
        inner_lr: the inner SGD step size.
        eval_steps: steps when adapting to a new task (default: inner_steps).
    """

    description = "Reptile: move the initialization towards task-adapted weights (first order, vmap over tasks)"
    paper = "Nichol, Achiam & Schulman, On First-Order Meta-Learning Algorithms, 2018"

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, inner_steps: int = 5,
                 inner_lr: float = 0.1, eval_steps: int | None = None) -> None:
        super().__init__(backbone, views, spec, inner_steps, inner_lr, eval_steps, first_order=True)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        t, spec = x.shape[0] // self.spec.size, self.spec
        tasks = x.reshape(t, spec.size, *x.shape[1:])                            # (T, N*(K+Q), ...) way-major
        labels = torch.arange(spec.ways, device=x.device).repeat_interleave(spec.per_class)  # (N*(K+Q),)
        theta = {k: p.detach() for k, p in self.backbone.named_parameters()}

        def task(items: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
            fast = self.adapt(theta, items, labels, spec.ways, self.inner_steps, first_order=True)
            return fast, F.cross_entropy(self.task_logits(fast, items), labels)

        with batch_statistics(self.backbone):
            phi, task_loss = vmap(task, randomness="different")(tasks)            # each entry (T, *shape)
        params = dict(self.backbone.named_parameters())
        loss = sum(0.5 * (params[k] - phi[k].mean(0)).pow(2).sum() for k in params)
        with torch.no_grad():
            self.backbone(x)  # refresh batch norm's running averages for frozen-feature use
        return StepOutput(loss, {"task_loss_after": float(task_loss.mean())})
