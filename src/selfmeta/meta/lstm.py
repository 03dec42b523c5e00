"""The LSTM meta-learner (Ravi & Larochelle, Optimization as a Model for Few-Shot Learning, ICLR 2017).

A learned optimizer replaces MAML's inner SGD. It is coordinate-wise: every entry of every adapted weight
is one row of a batch fed to the same small network, so its size does not depend on the learner's and any
number of ways works. Per coordinate and inner step t:

* inputs: the support loss and the entry's gradient, each preprocessed as in Andrychowicz et al. 2016
  (:func:`preprocess`) and detached: the paper's first-order assumption, the meta-gradient does not run
  through the learner's gradients (no second derivatives);
* a first LSTM layer (hidden 20 in the paper) reads them;
* the meta-learner cell, whose cell state is the weight itself:
  f_t = sigmoid(W_f [h_t, theta_{t-1}, f_{t-1}] + b_f), i_t = sigmoid(W_i [h_t, theta_{t-1}, i_{t-1}] + b_i),
  theta_t = f_t * theta_{t-1} - i_t * grad_t: a learned, per-entry step size i_t and weight decay f_t.

W_f and W_i start at zero, b_f large and b_i = logit(inner_lr): at initialization the update is SGD with
step inner_lr (and a decay factor sigmoid(b_f) ~ 1). The LSTM's weights, the head's initial value and the
encoder are meta-learned by the query loss after adaptation, as in MAML (whose torch.func inner loop and
``vmap`` over tasks this learner reuses; see :mod:`selfmeta.meta.maml`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad_and_value, vmap

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.errors import SelfmetaError
from selfmeta.meta.base import METALEARNERS
from selfmeta.meta.maml import HEAD_B, HEAD_W, MAML, Weights
from selfmeta.options import Option

PREPROCESS_P = 10.0  # the preprocessing's p (Andrychowicz et al. 2016)
# sigmoid(8) = 1 - 3.4e-4: a few steps stay within 0.1% of SGD, and the gate is not so saturated that
# meta-training cannot open it (the paper draws b_f from [4, 6])
FORGET_BIAS = 8.0

# The optimizer's state between inner steps, one row per adapted coordinate (P of them): the first layer's
# hidden and cell states (P, H), the previous forget and input gates (P,).
State = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def preprocess(x: torch.Tensor, p: float = PREPROCESS_P) -> torch.Tensor:
    """(...) -> (..., 2): (log|x| / p, sign x) where |x| >= e^-p, else (-1, e^p x). Puts gradients and
    losses of any magnitude on a scale an LSTM reads, keeping the sign (Andrychowicz et al. 2016)."""
    big = x.abs() >= math.exp(-p)
    magnitude = torch.where(big, x.abs().clamp_min(math.exp(-p)).log() / p, -1.0)  # clamp: no log(0) even unused
    direction = torch.where(big, x.sign(), math.exp(p) * x)
    return torch.stack([magnitude, direction], -1)


@METALEARNERS.register("lstm")
class LSTMOptimizer(MAML):
    """Meta-learn an optimizer, a coordinate-wise two-layer LSTM, that adapts the classifier head (and
    optionally the encoder) on a task's support in ``inner_steps`` steps, with the head's initial value
    and the encoder; the meta-loss is the query cross-entropy after adaptation, averaged over the tasks.

    The head's initial value is one learned vector (F) and bias, repeated for each way: labels are permuted
    per task, so a learned head init can only be symmetric across ways. A part shared by all ways shifts
    every logit equally and leaves the softmax unchanged, so this init acts only through the optimizer's
    gates, which read the weights (zero at initialization, as MAML's zero head).

    Args:
        inner_steps: optimizer steps on the support in meta-training (the paper: 5 to 12).
        inner_lr: the initial step size, the input gate's initial value sigmoid(b_i); in (0, 1).
        eval_steps: steps when adapting to a new task (default: inner_steps); the optimizer runs any number.
        hidden: the first LSTM layer's hidden size (the paper: 20).
        adapt_encoder: the optimizer also updates every encoder weight in the inner loop; otherwise the
            encoder stays fixed there and is meta-trained through the query features. The optimizer's
            state is (P, 4 hidden) per task and step for P adapted entries: memory grows with the encoder.
    """

    description = "LSTM meta-learner: a learned coordinate-wise LSTM optimizer adapts the head (torch.func, vmap)"
    paper = "Ravi & Larochelle, Optimization as a Model for Few-Shot Learning, ICLR 2017"
    options = {
        "inner_steps": Option("optimizer steps on the support in meta-training (paper: 5 to 12)", ge=1),
        "inner_lr": Option("initial step size, the input gate's initial value", gt=0, lt=1),
        "eval_steps": Option("optimizer steps when adapting to a new task; null: inner_steps", ge=1),
        "hidden": Option("hidden size of the optimizer's first LSTM layer (paper: 20)", ge=1),
        "adapt_encoder": Option("the optimizer also adapts the encoder's weights (default: the head only)"),
    }

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, inner_steps: int = 5,
                 inner_lr: float = 0.1, eval_steps: int | None = None, hidden: int = 20,
                 adapt_encoder: bool = False) -> None:
        if not 0 < inner_lr < 1:  # the config checks this too; here for direct construction
            raise SelfmetaError(f"lstm: inner_lr, the input gate's initial value, must lie in (0, 1), got {inner_lr}")
        # first_order: the paper's assumption, the learner's gradients are inputs, never differentiated
        super().__init__(backbone, views, spec, inner_steps, inner_lr, eval_steps, first_order=True)
        self.hidden, self.adapt_encoder = hidden, bool(adapt_encoder)
        self.head_weight = nn.Parameter(torch.zeros(backbone.num_features))  # (F,), repeated for each way
        self.head_bias = nn.Parameter(torch.zeros(()))
        # First layer, written out (aten's lstm_cell has no vmap rule): [x (4), h (H)] -> 4 gates (4H).
        self.lstm = nn.Linear(4 + hidden, 4 * hidden)
        # The meta-learner cell's gates: [h_t (H), theta_{t-1}, previous gate] -> one pre-activation.
        self.forget, self.input = nn.Linear(hidden + 2, 1), nn.Linear(hidden + 2, 1)
        for gate, bias in ((self.forget, FORGET_BIAS), (self.input, math.log(self.inner_lr / (1 - self.inner_lr)))):
            nn.init.zeros_(gate.weight)
            nn.init.constant_(gate.bias, bias)

    def query_logits(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, steps: int,
                     first_order: bool) -> torch.Tensor:
        """As MAML's; with the encoder fixed in the inner loop (the default) every item is embedded once, in
        one backbone call for the whole meta-batch (batch norm as in ProtoNet), and only the head adapts, on
        the features: the generic loop re-embedded the support at every step (5x slower on Omniglot)."""
        if self.adapt_encoder:
            return super().query_logits(support, support_y, query, steps, first_order)
        t, ways = support.shape[0], int(support_y.max()) + 1
        feats = self.backbone(torch.cat([support.flatten(0, 1), query.flatten(0, 1)]))          # (T*(S+Q), F)
        s_feat, q_feat = feats.to(self.head_weight.dtype).split([support[0].shape[0] * t, query[0].shape[0] * t])

        def task(s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:                            # (S, F), (Q, F)
            def support_loss(head: Weights) -> torch.Tensor:
                return F.cross_entropy(s @ head[HEAD_W].T + head[HEAD_B], support_y)

            head = self.init_head(ways, s)
            state = self.init_state(head)
            for _ in range(steps):
                grads, loss = grad_and_value(support_loss)(head)
                head, state = self.update(head, grads, loss, state, first_order)
            return q @ head[HEAD_W].T + head[HEAD_B]                                           # (Q, N)

        with torch.autocast(support.device.type, enabled=False):
            return vmap(task, randomness="different")(s_feat.reshape(t, -1, s_feat.shape[1]),
                                                      q_feat.reshape(t, -1, q_feat.shape[1]))

    def adapts(self, name: str) -> bool:
        return self.adapt_encoder or name in (HEAD_W, HEAD_B)

    def init_head(self, ways: int, like: torch.Tensor) -> Weights:
        return {HEAD_W: self.head_weight.expand(ways, -1), HEAD_B: self.head_bias.expand(ways)}

    def init_state(self, fast: Weights) -> State:
        ref = next(iter(fast.values()))
        coords = sum(w.numel() for w in fast.values())
        zeros = ref.new_zeros(coords, self.hidden)
        return zeros, zeros, ref.new_zeros(coords), ref.new_zeros(coords)

    def update(self, fast: Weights, grads: Weights, loss: torch.Tensor, state: State,
               first_order: bool) -> tuple[Weights, State]:
        h, c, f, i = state
        theta = torch.cat([w.reshape(-1) for w in fast.values()])                   # (P,) every adapted entry
        g = torch.cat([grads[k].reshape(-1) for k in fast]).detach()                # (P,) first order, always
        x = torch.cat([preprocess(g), preprocess(loss.detach()).expand(len(g), 2)], 1)  # (P, 4)
        gates = self.lstm(torch.cat([x, h], 1)).chunk(4, 1)  # input, forget, cell, output: 4 x (P, H)
        c = torch.sigmoid(gates[1]) * c + torch.sigmoid(gates[0]) * torch.tanh(gates[2])
        h = torch.sigmoid(gates[3]) * torch.tanh(c)
        f = torch.sigmoid(self.forget(torch.cat([h, theta[:, None], f[:, None]], 1))).squeeze(1)  # (P,)
        i = torch.sigmoid(self.input(torch.cat([h, theta[:, None], i[:, None]], 1))).squeeze(1)   # (P,)
        theta = f * theta - i * g
        sizes = [w.numel() for w in fast.values()]
        new = {k: t.reshape(w.shape) for (k, w), t in zip(fast.items(), theta.split(sizes))}
        return new, (h, c, f, i)
