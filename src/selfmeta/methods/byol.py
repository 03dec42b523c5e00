"""BYOL: Bootstrap Your Own Latent (Grill et al., NeurIPS 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.methods.heads import PROJECTION_OPTIONS, projection_head
from selfmeta.options import Option
from selfmeta.methods.momentum import cosine_momentum, ema_update_, momentum_copy
from selfmeta.objectives.byol import byol_loss


@METHODS.register("byol")
class BYOL(Method):
    """An online network (backbone, projector, predictor) predicts a target network's projection of the
    item's other view; the target (backbone and projector) is a moving average of the online network, and
    no negatives are used.

    The loss is the paper's symmetrized 2 - 2 cos(p, z') summed over both view orders. After every step the
    target moves by tau = 1 - (1 - momentum) (cos(pi progress) + 1) / 2, from ``momentum`` up to 1 at the
    end of training (:func:`selfmeta.methods.momentum.cosine_momentum`). The loss is per item, so several
    processes need nothing beyond DDP's gradient averaging.

    Args:
        momentum: tau_base, the target's starting moving-average rate. 0.99 suits small data and short runs;
            the paper uses 0.996 on ImageNet (0.99 with batch 512 or less). Too low and training can collapse;
            too high and the target barely moves in a short run.
        proj_hidden, proj_dim: projector widths (paper: 4096 and 256).
        pred_hidden: predictor hidden width (paper: 4096); the predictor outputs ``proj_dim``.
    """

    description = (
        "BYOL: online network predicts a moving-average target's projection; no negatives, cosine momentum schedule"
    )
    paper = "Grill et al., Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning, NeurIPS 2020"
    options = {
        "momentum": Option("tau_base, the target's starting moving-average rate (0.99 small data, 0.996 ImageNet)",
                           ge=0, le=1),
        **PROJECTION_OPTIONS,
        "pred_hidden": Option("hidden width of the predictor", ge=1),
    }

    def __init__(
        self,
        backbone: Backbone,
        views: Views,
        momentum: float = 0.99,
        proj_hidden: int = 1024,
        proj_dim: int = 256,
        pred_hidden: int = 1024,
    ) -> None:
        super().__init__(backbone, views)
        self.momentum = momentum
        self.projector = projection_head(backbone.num_features, proj_hidden, proj_dim)
        self.predictor = projection_head(proj_dim, pred_hidden, proj_dim)
        self.target_backbone = momentum_copy(backbone)
        self.target_projector = momentum_copy(self.projector)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        b = x.shape[0]
        views = torch.cat([self.views(x), self.views(x)])          # (2B, ...): one forward pass for both views
        p = self.predictor(self.projector(self.backbone(views))).float()   # (2B, proj_dim)
        with torch.no_grad():
            z = self.target_projector(self.target_backbone(views)).float()  # (2B, proj_dim)
        with torch.autocast(p.device.type, enabled=False):
            loss = byol_loss(p[:b], p[b:], z[:b], z[b:])
        with torch.no_grad():
            pos = (F.cosine_similarity(p[:b], z[b:]).mean() + F.cosine_similarity(p[b:], z[:b]).mean()) / 2
        return StepOutput(loss, {"pos_sim": float(pos)})

    def on_step_end(self, progress: float) -> None:
        tau = cosine_momentum(progress, self.momentum)
        ema_update_(self.target_backbone, self.backbone, tau)
        ema_update_(self.target_projector, self.projector, tau)
