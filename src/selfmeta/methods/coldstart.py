"""Cold-start users by meta-learning: each user is a task (MeLU, Lee et al. KDD 2019), adapted as Meta-SGD.

A task is a window of a user's sequence: the support is ``k`` consecutive interactions (k drawn from 1 to
``shots``), the query the ``queries`` interactions that follow. The encoder gives the user's state after the
support items alone; ``steps`` gradient steps on that state with learned per-dimension rates fit the support
items (:mod:`selfmeta.objectives.coldstart`); the loss is the cross-entropy of the query items under the
adapted state, differentiated through the steps (second order: the steps touch only a (B, d) state, so it
is cheap). Next-item prediction on the whole rows is kept beside it (``next_item`` weight), so the encoder
stays a SASRec.

Windows start at the user's first interaction with probability ``first`` (cold-start users are seen from
their start, whose items differ from later ones: more popular, more varied), elsewhere at random. Train on
rows that keep users' first items (``input.keep=first``).
"""

from __future__ import annotations

import math

import torch

from selfmeta.encoders.base import Backbone
from selfmeta.encoders.sequence import SPECIAL, trim
from selfmeta.methods.base import METHODS, StepOutput
from selfmeta.methods.sasrec import NextItem, next_item_loss
from selfmeta.modalities.base import Views
from selfmeta.objectives.coldstart import adapt_states, items_loss
from selfmeta.options import Option


def windows(x: torch.Tensor, shots: int, queries: int, first: float) -> tuple[torch.Tensor, ...]:
    """(B, L) rows with at least 2 items -> (support (B, shots) ids left-aligned, query (B, queries) ids,
    query_valid (B, queries) bool): per row k ~ U{1..shots} support items (at most length - 1) from a start
    that is 0 with probability ``first``, else uniform among those that leave a query item."""
    b, t = x.shape
    lengths = (x != 0).sum(1)
    k = torch.minimum(torch.randint(1, shots + 1, (b,), device=x.device), lengths - 1)             # (B,)
    latest = lengths - k - 1                                                                       # last start
    start = (torch.rand(b, device=x.device) * (latest + 1)).long()
    start = torch.where(torch.rand(b, device=x.device) < first, 0, start)
    steps = torch.arange(max(shots, queries), device=x.device)
    s_pos = (start.unsqueeze(1) + steps[:shots]).clamp_max(t - 1)
    support = x.gather(1, s_pos).masked_fill(steps[:shots] >= k.unsqueeze(1), 0)
    q_pos = start.unsqueeze(1) + k.unsqueeze(1) + steps[:queries]
    query_valid = q_pos < lengths.unsqueeze(1)
    query = x.gather(1, q_pos.clamp_max(t - 1)).masked_fill(~query_valid, 0)
    return support, query, query_valid


@METHODS.register("coldstart")
class ColdStart(NextItem):
    """Meta-learned adaptation of the user's state to a few first interactions (MAML with Meta-SGD rates)."""

    description = ("cold-start users as tasks: the state after k support items, adapted by learned-rate gradient "
                   "steps, predicts the next items (MeLU / Meta-SGD); plus next-item prediction")
    paper = "Lee et al., MeLU: Meta-Learned User Preference Estimator for Cold-Start Recommendation, KDD 2019"
    options = {
        "shots": Option("most support interactions per task (k is drawn from 1 to this)", ge=1),
        "queries": Option("interactions after the support that the adapted state must predict", ge=1),
        "steps": Option("gradient steps of the adaptation", ge=0),
        "lr": Option("initial rate of the adaptation steps (learned per dimension)", gt=0),
        "first": Option("probability that a task starts at the user's first interaction", ge=0, le=1),
        "next_item": Option("weight of next-item prediction on the whole rows", ge=0),
    }

    def __init__(self, backbone: Backbone, views: Views, shots: int = 5, queries: int = 10, steps: int = 3,
                 lr: float = 0.5, first: float = 0.5, next_item: float = 1.0) -> None:
        super().__init__(backbone, views)
        self.shots, self.queries, self.steps, self.first, self.next_item = shots, queries, steps, first, next_item
        self.log_lr = torch.nn.Parameter(torch.full((backbone.num_features,), math.log(lr)))

    @property
    def rates(self) -> torch.Tensor:
        """(d,) the adaptation's per-dimension rates."""
        return self.log_lr.exp()

    def scores(self, u: torch.Tensor) -> torch.Tensor:
        return self.encoder.catalogue_scores(u)

    def adapt(self, support: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """(B, k) support ids, left-aligned -> (B, d) adapted states."""
        u = self.encoder.forward_features(support)
        valid = support >= SPECIAL
        return adapt_states(self.scores, u, support - SPECIAL, valid, self.steps, self.rates, create_graph)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        x = trim(x)
        usable = (x != 0).sum(1) >= 2
        rec = next_item_loss(self.encoder, self.encoder.sequence(x), x) if self.next_item > 0 else x.sum() * 0.0
        support, query, valid = windows(x[usable], self.shots, self.queries, self.first)
        u = self.adapt(support, create_graph=self.training)
        meta = items_loss(self.scores, u, query - SPECIAL, valid & (query >= SPECIAL)).mean()
        return StepOutput(meta + self.next_item * rec, {"query": float(meta.detach()),
                                                        "next_item": float(rec.detach()),
                                                        "rate": float(self.rates.mean().detach())})
