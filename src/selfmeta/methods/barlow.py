"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Zbontar et al., ICML 2021)."""

from __future__ import annotations

import torch

from selfmeta import distributed
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.methods.heads import PROJECTION_OPTIONS, projection_head
from selfmeta.options import Option
from selfmeta.objectives.barlow import barlow_twins_loss, cross_correlation


@METHODS.register("barlow")
class BarlowTwins(Method):
    """Two views of every item through one network; the cross-correlation matrix of their standardized
    projections is pulled towards the identity: matched dimensions agree, different dimensions decorrelate.

    The statistics are over the global batch: with several processes the projections are gathered from
    every rank with gradients, and each rank computes the same loss (DDP's averaging then gives the
    full-batch gradient).

    Args:
        lambd: weight of the off-diagonal (redundancy) term. The paper's 5e-3 is tuned for proj_dim = 8192;
            there are proj_dim (proj_dim - 1) off-diagonal terms against proj_dim diagonal ones, so for small
            proj_dim try lambd ~ 1 / proj_dim.
        proj_hidden, proj_dim: projector widths (paper: 8192 and 8192, three layers); the method gains from
            a wide projector, and the batch should not be much smaller than proj_dim's tens.
    """

    description = "Barlow Twins: cross-correlation of two views' projections driven to the identity (global batch)"
    paper = "Zbontar et al., Barlow Twins: Self-Supervised Learning via Redundancy Reduction, ICML 2021"
    options = {"lambd": Option("weight of the off-diagonal (redundancy) term; the paper's 5e-3 is for proj_dim 8192",
                               ge=0),
               **PROJECTION_OPTIONS}

    def __init__(
        self, backbone: Backbone, views: Views, lambd: float = 5e-3, proj_hidden: int = 1024, proj_dim: int = 1024
    ) -> None:
        super().__init__(backbone, views)
        self.lambd = lambd
        self.projector = projection_head(backbone.num_features, proj_hidden, proj_dim)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        b = x.shape[0]
        views = torch.cat([self.views(x), self.views(x)])      # (2B, ...): one forward pass for both views
        z = self.projector(self.backbone(views)).float()        # (2B, proj_dim)
        z1 = distributed.all_gather_with_grad(z[:b])            # (W*B, proj_dim): the global batch
        z2 = distributed.all_gather_with_grad(z[b:])
        with torch.autocast(z.device.type, enabled=False):     # batch statistics in fp32
            loss = barlow_twins_loss(z1, z2, self.lambd)
            with torch.no_grad():
                agreement = torch.diagonal(cross_correlation(z1, z2)).mean()
        return StepOutput(loss, {"corr_diag": float(agreement)})
