"""Meta-learned clustering: an embedding meta-trained so that a differentiable k-means of a new task's
unlabeled items recovers its classes (Centroid Networks, Huang, Laradji, Cohen et al. 2019; meta-unsupervised
learning, Hsu, Levine & Finn, ICLR 2019).

The base learner is balanced soft k-means (:func:`~selfmeta.objectives.kmeans.soft_kmeans`): from a
k-means++ seeding, a few steps of soft assignment (an equal-size transport plan, since an episode's classes
are equally large: Centroid Networks' Sinkhorn k-means) and centroid means. The meta-learner differentiates
through those steps: the loss asks that two items of a task fall in the same cluster exactly when they share
a class, a binary cross-entropy on the co-assignment probabilities sum_j a_ij a_lj, which does not depend on
how the clusters are numbered. The temperature of the assignments is learned with the embedding. A
prototype loss on the same episode (ProtoNet's, weight ``proto_weight``) shapes the embedding early, when
random features give k-means nothing to recover (Centroid Networks train with that loss alone).

With ``--tasks umtra`` or ``cactus`` the classes are built without labels, so the clustering is
meta-learned with no labels at all. ``selfmeta evaluate RUN --protocol episode-cluster --adapt finetune``
scores this learner's own clustering; its ``adapt_predict`` (few-shot classification) is ProtoNet's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.encoders.base import Backbone
from selfmeta.meta.base import METALEARNERS, MetaLearner, query_accuracy
from selfmeta.meta.protonet import prototype_logits, prototypes
from selfmeta.methods.base import StepOutput
from selfmeta.modalities.base import Views
from selfmeta.objectives.kmeans import seeded_soft_kmeans
from selfmeta.options import Option


def co_assignment_loss(assignments: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Soft assignments (B, n, k), class ids (n,) -> binary cross-entropy between the probability that two
    items share a cluster, P = A A^T, and whether they share a class, over the pairs of distinct items."""
    same = (classes[:, None] == classes[None, :]).to(assignments.dtype)              # (n, n)
    p = (assignments @ assignments.transpose(1, 2)).clamp(1e-6, 1 - 1e-6)            # (B, n, n)
    off = ~torch.eye(len(classes), dtype=torch.bool, device=assignments.device)
    return F.binary_cross_entropy(p[:, off], same[off].expand(len(p), -1))


@METALEARNERS.register("metacluster")
class MetaCluster(MetaLearner):
    """Meta-train an embedding for balanced soft k-means: each task's items are clustered into N groups and
    the co-assignments are scored against the task's classes.

    Args:
        iters: soft k-means steps, differentiated through in meta-training and run as they are at test.
        temperature: the initial temperature of the assignments, softmax(-|x - c|^2 / (temperature * s)) with s
            the task's mean squared distance to its mean (scale-free); learned.
        balanced: clusters of equal size (Sinkhorn), the prior that an episode's classes are equally large.
        proto_weight: weight of ProtoNet's loss on the same episodes (0: the clustering loss alone).
        restarts: k-means++ seedings tried when clustering a new task; the one with the lowest soft k-means
            objective is kept (one seeding in meta-training).
    """

    description = "meta-learned clustering: an embedding for differentiable balanced k-means (Centroid Networks)"
    paper = "Huang, Laradji, Cohen et al., Centroid Networks for Few-Shot Clustering and Unsupervised Few-Shot Classification, 2019"
    options = {
        "iters": Option("soft k-means steps (differentiated through in meta-training)", ge=1),
        "temperature": Option("initial temperature of the soft assignments (learned)", gt=0),
        "balanced": Option("equal-size clusters (Sinkhorn): an episode's classes are equally large"),
        "proto_weight": Option("weight of the ProtoNet loss on the same episodes (0: clustering loss alone)", ge=0),
        "restarts": Option("k-means++ seedings tried when clustering a new task", ge=1),
    }

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, iters: int = 5, temperature: float = 0.5,
                 balanced: bool = True, proto_weight: float = 1.0, restarts: int = 10) -> None:
        super().__init__(backbone, views, spec)
        self.iters, self.balanced, self.restarts = iters, bool(balanced), restarts
        self.proto_weight = float(proto_weight)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        self.generator = torch.Generator().manual_seed(0)  # the seedings of meta-training (not checkpointed)

    def _cluster(self, features: torch.Tensor, k: int, generator: torch.Generator, restarts: int) -> torch.Tensor:
        """features (B, n, F) -> soft assignments (B, n, k) of the base learner, with the learned temperature."""
        return seeded_soft_kmeans(features, k, self.iters, self.log_temperature.exp(), generator, restarts,
                                  self.balanced)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        spec = self.spec
        t = x.shape[0] // spec.size
        feats = self.backbone(x).float()                                            # (T*N*(K+Q), F)
        with torch.autocast(x.device.type, enabled=False):
            tasks = feats.view(t, spec.size, -1)                                    # (T, N*(K+Q), F) way-major
            classes = torch.arange(spec.ways, device=x.device).repeat_interleave(spec.per_class)
            # Shuffle each task's items before seeding, so that k-means never sees the class-major order.
            order = torch.randperm(spec.size, generator=self.generator).to(x.device)
            a = self._cluster(tasks[:, order], spec.ways, self.generator, restarts=1)
            loss = co_assignment_loss(a, classes[order])
            logs = {"cluster_loss": float(loss.detach()), "temperature": float(self.log_temperature.detach().exp())}
            if self.proto_weight > 0:
                support, query = spec.split(feats)
                support_y, query_y = spec.labels(x.device)
                logits = prototype_logits(query, prototypes(support, support_y, spec.ways), "euclidean")
                loss = loss + self.proto_weight * F.cross_entropy(logits.flatten(0, 1), query_y.repeat(t))
                logs["accuracy"] = float(query_accuracy(logits.detach(), query_y).mean())
        return StepOutput(loss, logs)

    def adapt_predict(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        t, ways = support.shape[0], int(support_y.max()) + 1
        feats = self.backbone(torch.cat([support.flatten(0, 1), query.flatten(0, 1)])).float()
        s_feat, q_feat = feats.split([support.shape[0] * support.shape[1], query.shape[0] * query.shape[1]])
        protos = prototypes(s_feat.view(t, -1, feats.shape[1]), support_y, ways)
        return prototype_logits(q_feat.view(t, -1, feats.shape[1]), protos, "euclidean")

    @torch.no_grad()
    def cluster_items(self, items: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
        """items (E, n, ...) of E tasks -> (E, n) cluster ids in [0, k), no label used."""
        e, n = items.shape[:2]
        feats = self.backbone(items.flatten(0, 1)).float().view(e, n, -1)
        generator = torch.Generator().manual_seed(seed)
        return self._cluster(feats, k, generator, self.restarts).argmax(-1)
