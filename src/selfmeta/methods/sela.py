"""SeLa: Self-labelling via simultaneous clustering and representation learning (Asano, Rupprecht &
Vedaldi, ICLR 2020)."""

from __future__ import annotations

import torch

from selfmeta.data.dataset import Dataset
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.methods.base import METHODS
from selfmeta.options import Option
from selfmeta.methods.pseudolabels import PseudoLabelMethod, dataset_outputs
from selfmeta.objectives.sinkhorn import sinkhorn


SINKHORN_TOL = 1e-3  # relative error of the cluster masses at which the Sinkhorn iterations stop


@METHODS.register("sela")
class SeLa(PseudoLabelMethod):
    """Pseudo-labels that maximize the head's own likelihood under an equal-partition constraint.

    Before every epoch the head's log-probabilities over the k clusters are computed for the whole
    training set (eval mode, no gradient, un-augmented items), the optimal-transport problem "assign every
    item to a cluster, N/k items per cluster, agreeing with the model as much as possible" is solved with
    Sinkhorn-Knopp (:func:`selfmeta.objectives.sinkhorn.sinkhorn`), and every item takes the cluster where
    the plan puts most of its mass. During the epoch the backbone and the head minimize the cross-entropy of
    head(backbone(view)) against those labels. The equal-size constraint is what prevents the degenerate
    solution of one cluster for everything. The head is not re-initialized: the labels come from it, so
    their ids stay meaningful from one epoch to the next. The paper re-labels a fixed number of times
    during training; here it is once per epoch.

    Args:
        num_clusters: k. The paper uses 3,000 for ImageNet's 1,000 classes (over-clustering helps);
            clamped to N // 2 on small data.
        lam: inverse entropic regularization of the transport problem (the paper: 25). Larger follows the
            model's probabilities more closely; smaller gives softer plans and more random labels.
        sinkhorn_iters: the most Sinkhorn-Knopp iterations per re-labelling (it stops once the cluster
            masses are within 0.1% of equal). A confident head converges slowly: raise it (300-1000) if the
            log shows clusters of unequal sizes; each iteration costs two passes over the (N, k) plan.
    """

    description = "SeLa: equal-partition pseudo-labels by optimal transport (Sinkhorn-Knopp) each epoch, cross-entropy"
    paper = ("Asano, Rupprecht & Vedaldi, Self-labelling via simultaneous clustering and representation "
             "learning, ICLR 2020")
    options = {
        "lam": Option("inverse entropic regularization of the transport (paper: 25)", gt=0),
        "sinkhorn_iters": Option("most Sinkhorn-Knopp iterations per re-labelling", ge=1),
    }

    def __init__(
        self, backbone: Backbone, views: Views, num_clusters: int = 100, lam: float = 25.0, sinkhorn_iters: int = 100
    ) -> None:
        super().__init__(backbone, views, num_clusters)
        self.lam = float(lam)
        self.sinkhorn_iters = sinkhorn_iters

    def relabel(self, data: Dataset, k: int) -> torch.Tensor:
        def log_probs(x: torch.Tensor) -> torch.Tensor:
            return self.head(self.backbone(x))[:, :k].float().log_softmax(dim=1)    # (b, k)

        plan = sinkhorn(dataset_outputs(self, log_probs, data), self.lam, self.sinkhorn_iters, tol=SINKHORN_TOL)  # (N, k)
        return plan.argmax(dim=1)
