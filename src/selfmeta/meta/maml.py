"""MAML (Finn, Abbeel & Levine, ICML 2017), its first-order variant, and Meta-SGD (Li et al. 2017).

Built on ``torch.func``: the network is a function of a dictionary of fast weights
(``functional_call``), the inner loop takes gradients with ``grad``, and ``vmap`` runs the inner loops of
all the tasks of a meta-batch at once. Second-order MAML differentiates through the inner updates (the
outer backward runs through ``grad``); first-order MAML stops the gradient at each inner gradient, so the
meta-gradient is the query loss's gradient at the adapted weights.

The classification head is not meta-learned: every task starts from a zero head (N x F weights, N
biases), so one model adapts to any number of ways (Triantafillou et al. 2020's fo-Proto-MAML and Ye &
Chao 2022 start the head from zero or prototypes for the same reason: labels are permuted per task, so a
learned head init can only be symmetric). The first inner step therefore fits the head alone; the
body adapts from the second step on.

Batch norm uses the statistics of the task's own batch, in training and in adaptation (MAML's choice).
Its running averages, needed by the frozen-feature evaluation, are refreshed by a plain forward of each
meta-batch, outside the inner loops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.meta.base import METALEARNERS, MetaLearner, batch_statistics, query_accuracy
from selfmeta.methods.base import StepOutput
from selfmeta.options import Option

Weights = dict[str, torch.Tensor]
HEAD_W, HEAD_B = "head.weight", "head.bias"


@METALEARNERS.register("maml")
class MAML(MetaLearner):
    """Learn an initialization from which ``inner_steps`` SGD steps on a task's support set classify its
    queries well; the meta-loss is the query cross-entropy after adaptation, averaged over the tasks.

    Args:
        inner_steps: SGD steps on the support set during meta-training (the paper: 1 for Omniglot 5-way, 5
            for 20-way).
        inner_lr: the inner step size alpha (the paper: 0.4 with 1 step, 0.1 with 5). With several steps
            keep it near 0.1: from the zero head the body moves from the second step on, and 0.4 there made
            meta-training unstable on digits (in-episode accuracy 0.6-0.7 against 0.99 with one step).
        eval_steps: inner steps when adapting to a new task (default: inner_steps).
        first_order: drop the second-order terms (FOMAML); ``fomaml`` is this learner with True.
    """

    description = "MAML: meta-learned initialization, inner SGD on the support (torch.func, vmap over tasks)"
    paper = "Finn, Abbeel & Levine, Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks, ICML 2017"
    options = {
        "inner_steps": Option("SGD steps on the support in meta-training (paper: 1 for 5-way, 5 for 20-way)", ge=1),
        "inner_lr": Option("inner step size alpha (paper: 0.4 with 1 step, 0.1 with 5)", gt=0),
        "eval_steps": Option("inner steps when adapting to a new task; null: inner_steps", ge=1),
        "first_order": Option("drop the second-order terms (FOMAML)"),
    }

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, inner_steps: int = 1,
                 inner_lr: float = 0.4, eval_steps: int | None = None, first_order: bool = False) -> None:
        super().__init__(backbone, views, spec)
        self.inner_steps, self.inner_lr = inner_steps, float(inner_lr)
        self.eval_steps = eval_steps or inner_steps
        self.first_order = bool(first_order)

    # --- the inner loop ---------------------------------------------------------------------------------
    def step_size(self, name: str) -> torch.Tensor | float:
        """The inner learning rate of fast weight ``name`` (a scalar here; Meta-SGD learns one per entry)."""
        return self.inner_lr

    def task_logits(self, fast: Weights, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) items of one task -> (B, N) logits of the network with fast weights ``fast``."""
        body = {k: v for k, v in fast.items() if k not in (HEAD_W, HEAD_B)}
        features = functional_call(self.backbone, {**body, **dict(self.backbone.named_buffers())}, (x,))
        return features.to(fast[HEAD_W].dtype) @ fast[HEAD_W].T + fast[HEAD_B]

    def adapts(self, name: str) -> bool:
        """Whether the inner loop updates fast weight ``name`` (MAML: all of them); the others stay fixed."""
        return True

    def init_head(self, ways: int, like: torch.Tensor) -> Weights:
        """A task's initial head, N x F weights and N biases: zeros here (see the module docstring)."""
        return {HEAD_W: like.new_zeros(ways, self.backbone.num_features), HEAD_B: like.new_zeros(ways)}

    def init_state(self, fast: Weights) -> object:
        """The inner optimizer's state before the first step, for the adapted weights ``fast`` (SGD: none)."""
        return None

    def update(self, fast: Weights, grads: Weights, loss: torch.Tensor, state: object,
               first_order: bool) -> tuple[Weights, object]:
        """One inner step from the support loss and its gradients: SGD, w - alpha * g (g a constant when
        ``first_order``). Returns the new fast weights and optimizer state."""
        step = {k: grads[k].detach() if first_order else grads[k] for k in fast}
        return {k: w - self.step_size(k) * step[k] for k, w in fast.items()}, state

    def adapt(self, params: Weights, support: torch.Tensor, support_y: torch.Tensor, ways: int, steps: int,
              first_order: bool) -> Weights:
        """One task's fast weights after ``steps`` inner steps (``update``) on its support (S, ...), from
        ``params`` and the initial head."""
        fast = {**params, **self.init_head(ways, next(iter(params.values())))}
        fixed = {k: w for k, w in fast.items() if not self.adapts(k)}
        moving = {k: w for k, w in fast.items() if self.adapts(k)}  # differentiate these only
        state = self.init_state(moving)

        def support_loss(weights: Weights) -> torch.Tensor:
            return F.cross_entropy(self.task_logits({**fixed, **weights}, support), support_y)

        for _ in range(steps):
            grads, loss = grad_and_value(support_loss)(moving)
            moving, state = self.update(moving, grads, loss, state, first_order)
        return {**fixed, **moving}

    def query_logits(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, steps: int,
                     first_order: bool) -> torch.Tensor:
        """support (T, S, ...), support_y (S,), query (T, Q, ...) -> (T, Q, N) logits after adaptation."""
        ways = int(support_y.max()) + 1
        params = dict(self.backbone.named_parameters())

        def task(s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
            return self.task_logits(self.adapt(params, s, support_y, ways, steps, first_order), q)

        with batch_statistics(self.backbone):
            # Each task draws its own dropout masks (encoders with dropout: the record fusion's Transformer).
            return vmap(task, randomness="different")(support, query)

    # --- the meta-step ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        support, query = self.spec.split(x)
        support_y, query_y = self.spec.labels(x.device)
        logits = self.query_logits(support, support_y, query, self.inner_steps, self.first_order)  # (T, NQ, N)
        loss = F.cross_entropy(logits.flatten(0, 1), query_y.repeat(logits.shape[0]))
        with torch.no_grad():
            self.backbone(x)  # refresh batch norm's running averages (train mode) for frozen-feature use
        return StepOutput(loss, {"accuracy": float(query_accuracy(logits.detach(), query_y).mean())})

    def adapt_predict(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            return self.query_logits(support, support_y, query, self.eval_steps, first_order=True).detach()


@METALEARNERS.register("fomaml")
class FOMAML(MAML):
    """First-order MAML: the meta-gradient is the query loss's gradient at the adapted weights, applied to
    the initialization (no differentiation through the inner loop: less memory and time)."""

    description = "first-order MAML: no second-order terms through the inner loop"

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, inner_steps: int = 1,
                 inner_lr: float = 0.4, eval_steps: int | None = None) -> None:
        super().__init__(backbone, views, spec, inner_steps, inner_lr, eval_steps, first_order=True)


@METALEARNERS.register("metasgd")
class MetaSGD(MAML):
    """Meta-SGD: the initialization and a learning rate for every entry of every weight are meta-learned;
    the inner update is w - alpha * grad with alpha learned (its sign too, so it also learns a direction).
    The zero head's rates are one per feature, shared by the ways (so any N works).

    Args:
        inner_steps: the paper adapts in one step.
        inner_lr: the initial value of every alpha.
    """

    description = "Meta-SGD: MAML that also meta-learns a step size per weight entry"
    paper = "Li, Zhou, Chen & Li, Meta-SGD: Learning to Learn Quickly for Few-Shot Learning, 2017"

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, inner_steps: int = 1,
                 inner_lr: float = 0.4, eval_steps: int | None = None, first_order: bool = False) -> None:
        super().__init__(backbone, views, spec, inner_steps, inner_lr, eval_steps, first_order)
        rates = {_key(k): nn.Parameter(torch.full_like(p, self.inner_lr)) for k, p in backbone.named_parameters()}
        rates[_key(HEAD_W)] = nn.Parameter(torch.full((backbone.num_features,), self.inner_lr))
        rates[_key(HEAD_B)] = nn.Parameter(torch.tensor(self.inner_lr))
        self.rates = nn.ParameterDict(rates)

    def step_size(self, name: str) -> torch.Tensor:
        return self.rates[_key(name)]


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots
