"""Cross-modal contrastive learning between two groups of columns of the same record (CLIP's objective)."""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from selfmeta import distributed
from selfmeta.encoders.base import Backbone
from selfmeta.errors import SelfmetaError
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.methods.heads import PROJECTION_OPTIONS, projection_head
from selfmeta.methods.simclr import global_nt_xent
from selfmeta.modalities.base import Views
from selfmeta.objectives import clip_loss
from selfmeta.options import Option

MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps its learned inverse temperature at 100


@METHODS.register("crossmodal")
class CrossModal(Method):
    """Each record is split into two sides: the columns of the kinds in ``group`` (default: the text) and
    all the others. The same backbone embeds each side with the other side's columns hidden (made missing,
    as a record with those values absent); two projection heads and CLIP's symmetric InfoNCE with a learned
    temperature pull a record's two sides together against the other records of the (global) batch.

    Records where one side has no value at all (a review with no text) are neither anchors nor negatives,
    so missing values never make false pairs; they still train every other method.

    Args:
        group: the column kinds of side A, comma-separated ("text", "image,text"); side B is every other
            column.
        temperature: the initial temperature (CLIP: 0.07); learned, at least 0.01.
        augment: apply the record views before splitting (the per-column corruptions and column dropout).
        within: weight of SimCLR's NT-Xent between two views of the whole record, added to the cross-modal
            loss (0: the cross-modal loss alone). The cross-modal pairs teach what the two sides share;
            the per-record views keep what only one side knows (the text's sentiment, absent from the rest).
        within_temperature: NT-Xent temperature of that term.
        proj_hidden, proj_dim: the two projection heads' widths.

    Logs ``pos_sim`` (mean cosine of the two sides), ``temperature`` and ``valid`` (fraction of records
    with both sides).
    """

    description = "cross-modal contrastive (CLIP): one group of columns against the others, symmetric InfoNCE"
    paper = "Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021"
    modalities = ("record",)
    options = {
        "group": Option("column kinds of one side, comma-separated (number, category, text, image); the other "
                        "side is every other column"),
        "temperature": Option("initial temperature of the learned softmax temperature (CLIP: 0.07)", gt=0),
        "augment": Option("apply the record views before splitting the columns"),
        "within": Option("weight of NT-Xent between two views of the whole record (0: cross-modal alone)", ge=0),
        "within_temperature": Option("NT-Xent temperature of the per-record term", gt=0),
        **PROJECTION_OPTIONS,
    }

    def __init__(self, backbone: Backbone, views: Views, group: str = "text", temperature: float = 0.07,
                 augment: bool = True, within: float = 0.0, within_temperature: float = 0.5, proj_hidden: int = 512,
                 proj_dim: int = 128) -> None:
        super().__init__(backbone, views)
        layout = views.layout
        group = tuple(g.strip() for g in group.split(","))
        unknown = [g for g in group if g not in ("number", "category", "text", "image")]
        if unknown:
            raise SelfmetaError(f"method 'crossmodal': group {unknown[0]!r} is not a column kind; "
                                "valid: number, category, text, image")
        side_a = torch.tensor([kind in group for kind in layout.kinds])
        if not side_a.any() or side_a.all():
            raise SelfmetaError(f"method 'crossmodal' needs columns on both sides: group={list(group)} against the "
                                f"rest, and the record's column kinds are {', '.join(layout.kinds)}")
        self.register_buffer("side_a", side_a, persistent=False)                    # (K,) bool
        self.augment = bool(augment)
        self.project_a = projection_head(backbone.num_features, proj_hidden, proj_dim)
        self.project_b = projection_head(backbone.num_features, proj_hidden, proj_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.within, self.within_temperature = float(within), float(within_temperature)
        if self.within > 0:
            self.projector = projection_head(backbone.num_features, proj_hidden, proj_dim)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        layout, b = self.views.layout, len(x)
        v = self.views(x) if self.augment else x
        present = layout.present(v)                                                 # (B, K)
        side_a = self.side_a.expand(b, -1)                                          # (B, K)
        valid = (present & side_a).any(1) & (present & ~side_a).any(1)              # (B,)
        parts = [layout.hide(v, ~side_a), layout.hide(v, side_a)]                   # side A, side B: (B, D) each
        if self.within > 0:
            parts += [v, self.views(x)]                                             # two views of whole records
        features = self.backbone(torch.cat(parts))                                  # (2B or 4B, F)
        za, zb = self.project_a(features[:b]).float(), self.project_b(features[b:2 * b]).float()
        scale = self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        all_za, all_zb = distributed.all_gather_with_grad(za), distributed.all_gather_with_grad(zb)
        all_valid = distributed.all_gather_no_grad(valid.to(torch.uint8)).bool()
        with torch.autocast(za.device.type, enabled=False):
            loss = clip_loss(za, zb, scale, valid, all_za, all_zb, all_valid, offset=distributed.rank() * b)
        logs = {}
        if self.within > 0:
            z = self.projector(features[2 * b:]).float()                           # (2B, proj_dim)
            within, logs["within_pos_sim"] = global_nt_xent(z[:b], z[b:], self.within_temperature)
            logs["crossmodal"] = float(loss.detach())
            loss = loss + self.within * within
        with torch.no_grad():
            pos = F.cosine_similarity(za, zb)[valid].mean() if bool(valid.any()) else torch.zeros(())
        return StepOutput(loss, {"pos_sim": float(pos), "temperature": float(1 / scale.detach()),
                                 "valid": float(valid.float().mean()), **logs})
