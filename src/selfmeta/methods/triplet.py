"""Triplet loss as a self-supervised objective: FaceNet (Schroff, Kalenichenko & Philbin, CVPR 2015), with
batch-hard mining from "In Defense of the Triplet Loss for Person Re-Identification" (Hermans, Beyer &
Leibe 2017).

Without labels, an item is its own class: the two augmented views of an item are the positive pair and
the views of every other item in the (global) batch are negatives. This module also holds the base that
the ``contrastive`` method shares.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from selfmeta import distributed
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.methods.heads import PROJECTION_OPTIONS, projection_head
from selfmeta.options import Option
from selfmeta.objectives.metric import TRIPLET_MINING, triplet_loss

MetricLoss = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


class TwoViewMetric(Method):
    """Two views per item, L2-normalized projections, a metric loss with the item as the label.

    With several processes the projections are gathered from all ranks (gradients flow through the
    gather), so every anchor's negatives are the views of the global batch. Subclasses set the loss.
    """

    loss_fn: MetricLoss

    def __init__(
        self, backbone: Backbone, views: Views, margin: float, mining: str, proj_hidden: int, proj_dim: int
    ) -> None:
        super().__init__(backbone, views)
        self.margin = float(margin)
        self.mining = mining
        self.projector = projection_head(backbone.num_features, proj_hidden, proj_dim)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        b = x.shape[0]
        views = torch.cat([self.views(x), self.views(x)])                 # (2B, ...): both views in one pass
        z = F.normalize(self.projector(self.backbone(views)).float(), dim=1)  # (2B, proj_dim), unit vectors
        rank, world = distributed.rank(), distributed.world_size()
        # Labels are positions in the global batch: rank r's items are r*B .. r*B + B - 1, each twice (two views).
        items = torch.arange(world * b, device=z.device).view(world, 1, b)  # (W, 1, B)
        all_labels = items.expand(world, 2, b).reshape(-1)                # (W*2B,) in the gathered order
        labels = all_labels[rank * 2 * b : (rank + 1) * 2 * b]            # (2B,) this rank's anchors
        all_z = distributed.all_gather_with_grad(z)                       # (W*2B, proj_dim), rank blocks
        with torch.autocast(z.device.type, enabled=False):
            loss, stats = self.loss_fn(
                z, labels, self.margin, self.mining, all_z=all_z, all_labels=all_labels, offset=rank * 2 * b
            )
        return StepOutput(loss, {k: float(v) for k, v in stats.items()})


@METHODS.register("triplet")
class Triplet(TwoViewMetric):
    """Triplet loss on two views per item: the other view of an item is its positive, the other items' views
    are its negatives; a negative must stay ``margin`` farther (in squared L2 distance between unit vectors)
    than the positive.

    Args:
        margin: FaceNet's alpha on squared distances between L2-normalized projections, which lie in [0, 4];
            0.2 (the paper's) is a good start, 0.1-0.5 the useful range; larger margins keep more triplets
            active but spread the embedding less evenly.
        mining: "batch_hard" (Hermans et al.: each anchor's hardest positive and hardest negative in the
            global batch; the strongest signal, best with batches of 128 and more) or "semi_hard" (FaceNet:
            the closest negative farther than the positive but within the margin, the hardest negative where
            none is; gentler early in training).
        proj_hidden, proj_dim: projection head widths (SimCLR's MLP head); the loss sees the projection,
            downstream tasks the backbone features.

    Logs: ``active`` (fraction of mined triplets with a positive loss), ``pos_dist`` and ``neg_dist`` (mean
    squared distances of the mined positives and negatives).
    """

    description = "Triplet loss (FaceNet) on two views per item; batch-hard or semi-hard negatives, global batch"
    paper = (
        "Schroff, Kalenichenko & Philbin, FaceNet: A Unified Embedding for Face Recognition and Clustering, "
        "CVPR 2015; Hermans, Beyer & Leibe, In Defense of the Triplet Loss for Person Re-Identification, 2017"
    )
    loss_fn = staticmethod(triplet_loss)
    options = {
        "margin": Option("alpha on squared distances of unit vectors (in [0, 4]); 0.1-0.5 is useful", gt=0),
        "mining": Option("batch_hard: hardest positive and negative per anchor; semi_hard: FaceNet's",
                         choices=TRIPLET_MINING),
        **PROJECTION_OPTIONS,
    }

    def __init__(
        self,
        backbone: Backbone,
        views: Views,
        margin: float = 0.2,
        mining: str = "batch_hard",
        proj_hidden: int = 512,
        proj_dim: int = 128,
    ) -> None:
        super().__init__(backbone, views, margin, mining, proj_hidden, proj_dim)
