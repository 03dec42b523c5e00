"""The contrastive (margin) loss as a self-supervised objective: "Dimensionality Reduction by Learning an
Invariant Mapping" (Hadsell, Chopra & LeCun, CVPR 2006).

Without labels, an item is its own class: the two augmented views of an item are the positive pair, the
views of every other item in the (global) batch are negatives. Positives are pulled to distance 0,
negatives pushed beyond the margin.
"""

from __future__ import annotations

from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.methods.base import METHODS
from selfmeta.methods.triplet import TwoViewMetric
from selfmeta.methods.heads import PROJECTION_OPTIONS
from selfmeta.objectives.metric import CONTRASTIVE_MINING, contrastive_loss
from selfmeta.options import Option


@METHODS.register("contrastive")
class Contrastive(TwoViewMetric):
    """Contrastive margin loss on two views per item: 1/2 D^2 for the positive pair, 1/2 max(0, m - D)^2 for
    the negatives, D the L2 distance between L2-normalized projections (so D lies in [0, 2]).

    Args:
        margin: m, the distance beyond which negatives cost nothing. Random unit vectors in many dimensions
            sit near sqrt(2) ~ 1.41 from each other, so 1.0 (the default) asks negatives to be at least
            that far apart in angle (cosine below 0.5); 0.5-1.4 is the useful range.
        mining: "batch_hard" (each anchor's farthest positive and closest negative in the global batch;
            Hermans et al. 2017), "semi_hard" (each positive pair with the closest negative farther than it
            but within the margin, the hardest negative where none is; Schroff et al. 2015) or "all" (every
            positive and every negative pair, the original formulation; positives and negatives are
            averaged separately so that the many negatives do not drown the one positive).
        proj_hidden, proj_dim: projection head widths (SimCLR's MLP head); the loss sees the projection,
            downstream tasks the backbone features.

    Logs: ``active`` (fraction of mined negatives inside the margin), ``pos_dist`` and ``neg_dist`` (mean
    distances of the mined positive and negative pairs).
    """

    description = "Contrastive margin loss (Hadsell et al.) on two views per item, negatives from the global batch"
    paper = "Hadsell, Chopra & LeCun, Dimensionality Reduction by Learning an Invariant Mapping, CVPR 2006"
    loss_fn = staticmethod(contrastive_loss)
    options = {
        "margin": Option("distance beyond which negatives cost nothing", gt=0),
        "mining": Option("which pairs count: the hardest per anchor, semi-hard, or all", choices=CONTRASTIVE_MINING),
        **PROJECTION_OPTIONS,
    }

    def __init__(
        self,
        backbone: Backbone,
        views: Views,
        margin: float = 1.0,
        mining: str = "batch_hard",
        proj_hidden: int = 512,
        proj_dim: int = 128,
    ) -> None:
        super().__init__(backbone, views, margin, mining, proj_hidden, proj_dim)
