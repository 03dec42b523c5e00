"""Metric-learning meta-training: triplet (Schroff et al. 2015; batch-hard mining, Hermans et al. 2017) and
contrastive margin (Hadsell, Chopra & LeCun 2006) losses on the classes of labelled episodes.

"Train a metric, then adapt with a few labels": the encoder learns an embedding where items of a class are
close; a new task is solved by nearest prototype (``adapt_predict``) or, in the few-shot evaluation, by
logistic regression or a head fine-tuned on the support features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.meta.base import METALEARNERS, MetaLearner
from selfmeta.meta.protonet import prototype_logits, prototypes
from selfmeta.methods.base import StepOutput
from selfmeta.objectives.metric import CONTRASTIVE_MINING, TRIPLET_MINING, contrastive_loss, triplet_loss
from selfmeta.options import Option


class EpisodeMetric(MetaLearner):
    """The embeddings of every item of the meta-batch's episodes, L2-normalized, under a metric loss whose
    labels are the episodes' classes (class n of task t is label t*N + n). Classes of different tasks are
    negatives of each other: all T*N classes of a meta-batch form one large metric-learning batch (two
    tasks rarely draw the same class: about 3 pairs per batch of 32 5-way Omniglot tasks)."""

    loss_fn = staticmethod(triplet_loss)

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, margin: float, mining: str) -> None:
        super().__init__(backbone, views, spec)
        self.margin, self.mining = margin, mining

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        t = x.shape[0] // self.spec.size
        z = F.normalize(self.backbone(x).float(), dim=1)                                   # (T*N*(K+Q), F)
        labels = torch.arange(t * self.spec.ways, device=x.device).repeat_interleave(self.spec.per_class)
        with torch.autocast(x.device.type, enabled=False):
            loss, stats = self.loss_fn(z, labels, self.margin, self.mining)
        return StepOutput(loss, {k: float(v) for k, v in stats.items()})

    def adapt_predict(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        t, ways = support.shape[0], int(support_y.max()) + 1
        s = F.normalize(self.backbone(support.flatten(0, 1)).float(), dim=1).reshape(t, support.shape[1], -1)
        q = F.normalize(self.backbone(query.flatten(0, 1)).float(), dim=1).reshape(t, query.shape[1], -1)
        return prototype_logits(q, prototypes(s, support_y, ways), "euclidean")


@METALEARNERS.register("triplet")
class EpisodeTriplet(EpisodeMetric):
    """Triplet loss over the episodes' classes (squared distances between unit vectors, in [0, 4]).

    Args:
        margin: FaceNet's alpha (0.2 in the paper).
        mining: "batch_hard" or "semi_hard".
    """

    description = "metric meta-training: triplet loss on the episodes' classes, nearest-prototype adaptation"
    paper = "Schroff, Kalenichenko & Philbin, FaceNet, CVPR 2015; Hermans, Beyer & Leibe, In Defense of the Triplet Loss, 2017"
    options = {
        "margin": Option("FaceNet's alpha on squared distances of unit vectors (paper: 0.2)", gt=0),
        "mining": Option("hardest or semi-hard negatives", choices=TRIPLET_MINING),
    }

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, margin: float = 0.2,
                 mining: str = "batch_hard") -> None:
        super().__init__(backbone, views, spec, margin, mining)


@METALEARNERS.register("contrastive")
class EpisodeContrastive(EpisodeMetric):
    """Contrastive margin loss over the episodes' classes (L2 distances between unit vectors, in [0, 2]).

    Args:
        margin: negatives closer than this are pushed apart.
        mining: "batch_hard", "semi_hard" or "all".
    """

    loss_fn = staticmethod(contrastive_loss)
    options = {
        "margin": Option("negatives closer than this are pushed apart", gt=0),
        "mining": Option("which pairs count", choices=CONTRASTIVE_MINING),
    }
    description = "metric meta-training: contrastive margin loss on the episodes' classes"
    paper = "Hadsell, Chopra & LeCun, Dimensionality Reduction by Learning an Invariant Mapping, CVPR 2006"

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, margin: float = 1.0,
                 mining: str = "all") -> None:
        super().__init__(backbone, views, spec, margin, mining)
