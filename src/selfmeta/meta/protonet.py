"""Prototypical Networks for Few-shot Learning (Snell, Swersky & Zemel, NeurIPS 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.errors import SelfmetaError
from selfmeta.meta.base import METALEARNERS, MetaLearner, query_accuracy
from selfmeta.methods.base import StepOutput
from selfmeta.options import Option

DISTANCES = ("euclidean", "cosine")


def prototypes(support: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """(T, S, F) support features, (S,) labels in [0, N) -> (T, N, F) class means (any number of shots each)."""
    onehot = F.one_hot(labels, ways).to(support.dtype)                        # (S, N)
    return torch.einsum("tsf,sn->tnf", support, onehot) / onehot.sum(0).clamp_min(1).unsqueeze(1)


def prototype_logits(query: torch.Tensor, protos: torch.Tensor, distance: str, scale: float = 10.0) -> torch.Tensor:
    """(T, Q, F) query features, (T, N, F) prototypes -> (T, Q, N) logits.

    ``euclidean``: minus the squared distance (the paper's choice: a Bregman divergence, so the
    prototype is the class mean of the right geometry); ``cosine``: ``scale`` times the cosine similarity.
    """
    if distance == "euclidean":
        sq = (query * query).sum(-1, keepdim=True) + (protos * protos).sum(-1).unsqueeze(1) - 2 * query @ protos.transpose(1, 2)
        return -sq.clamp_min(0)
    if distance == "cosine":
        return scale * F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).transpose(1, 2)
    raise SelfmetaError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")


@METALEARNERS.register("protonet")
class ProtoNet(MetaLearner):
    """Each class is the mean of its support embeddings; queries are classified by a softmax over their
    negative distances to the prototypes, trained with cross-entropy on the queries of every episode.

    Args:
        distance: "euclidean" (squared, the paper's) or "cosine".
        scale: the cosine logits' temperature inverse (ignored for euclidean).
    """

    description = "Prototypical Networks: class means of support embeddings, softmax over distances"
    paper = "Snell, Swersky & Zemel, Prototypical Networks for Few-shot Learning, NeurIPS 2017"
    options = {
        "distance": Option("squared euclidean (the paper's) or cosine", choices=DISTANCES),
        "scale": Option("inverse temperature of the cosine logits (ignored for euclidean)", gt=0),
    }

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, distance: str = "euclidean",
                 scale: float = 10.0) -> None:
        super().__init__(backbone, views, spec)
        self.distance = distance
        self.scale = scale

    def _logits(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        t, ways = support.shape[0], int(support_y.max()) + 1
        feats = self.backbone(torch.cat([support.flatten(0, 1), query.flatten(0, 1)])).float()  # (T*(S+Q), F)
        s_feat, q_feat = feats.split([support.shape[0] * support.shape[1], query.shape[0] * query.shape[1]])
        protos = prototypes(s_feat.reshape(t, -1, feats.shape[1]), support_y, ways)             # (T, N, F)
        return prototype_logits(q_feat.reshape(t, -1, feats.shape[1]), protos, self.distance, self.scale)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        support, query = self.spec.split(x)
        support_y, query_y = self.spec.labels(x.device)
        logits = self._logits(support, support_y, query)                                        # (T, NQ, N)
        with torch.autocast(x.device.type, enabled=False):
            loss = F.cross_entropy(logits.float().flatten(0, 1), query_y.repeat(logits.shape[0]))
        return StepOutput(loss, {"accuracy": float(query_accuracy(logits.detach(), query_y).mean())})

    def adapt_predict(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return self._logits(support, support_y, query)
