"""VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning (Bardes, Ponce &
LeCun, ICLR 2022)."""

from __future__ import annotations

import torch

from selfmeta import distributed
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.methods.heads import PROJECTION_OPTIONS, projection_head
from selfmeta.options import Option
from selfmeta.objectives.vicreg import vicreg_terms


@METHODS.register("vicreg")
class VICReg(Method):
    """Two views of every item through one network; their projections are pulled together (invariance)
    while each branch keeps every dimension's standard deviation above 1 (variance) and its dimensions
    decorrelated (covariance). No negatives, no moving average, no normalization of the embeddings.

    The statistics are over the global batch: with several processes the projections are gathered from
    every rank with gradients, and each rank computes the same loss. The variance term is the paper's sum
    over both branches (the authors' code averages them: halve std_coeff to match it).

    Args:
        sim_coeff: lambda, weight of the invariance (mean squared error) term; paper: 25.
        std_coeff: mu, weight of the variance hinge; paper: 25. Keep it >= sim_coeff or the embeddings can
            shrink towards collapse; the paper found sim_coeff = std_coeff > 1 with cov_coeff = 1 to work best.
        cov_coeff: nu, weight of the covariance term; paper: 1.
        proj_hidden, proj_dim: projector widths (paper: 8192 and 8192, three layers); wider helps.
    """

    description = "VICReg: invariance + variance + covariance regularization of two views' projections (global batch)"
    paper = ("Bardes, Ponce & LeCun, VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised "
             "Learning, ICLR 2022")
    options = {
        "sim_coeff": Option("lambda, weight of the invariance (MSE) term (paper: 25)", ge=0),
        "std_coeff": Option("mu, weight of the variance hinge (paper: 25; keep it >= sim_coeff)", ge=0),
        "cov_coeff": Option("nu, weight of the covariance term (paper: 1)", ge=0),
        **PROJECTION_OPTIONS,
    }

    def __init__(
        self,
        backbone: Backbone,
        views: Views,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        proj_hidden: int = 1024,
        proj_dim: int = 1024,
    ) -> None:
        super().__init__(backbone, views)
        self.sim_coeff, self.std_coeff, self.cov_coeff = sim_coeff, std_coeff, cov_coeff
        self.projector = projection_head(backbone.num_features, proj_hidden, proj_dim)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        b = x.shape[0]
        views = torch.cat([self.views(x), self.views(x)])      # (2B, ...): one forward pass for both views
        z = self.projector(self.backbone(views)).float()        # (2B, proj_dim)
        z1 = distributed.all_gather_with_grad(z[:b])            # (W*B, proj_dim): the global batch
        z2 = distributed.all_gather_with_grad(z[b:])
        with torch.autocast(z.device.type, enabled=False):     # batch statistics in fp32
            t = vicreg_terms(z1, z2)
            loss = t.weighted(self.sim_coeff, self.std_coeff, self.cov_coeff)
        return StepOutput(loss, {name: float(term.detach()) for name, term in t._asdict().items()})
