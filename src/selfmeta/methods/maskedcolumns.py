"""Masked-column reconstruction for records: hide whole columns, predict their values from the rest."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfmeta.encoders.base import Backbone
from selfmeta.encoders.text import SPECIAL_IDS
from selfmeta.errors import SelfmetaError
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.modalities.base import Views
from selfmeta.options import Option


def hide_columns(present: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, K) bool present columns -> (B, K) bool hidden ones: ``ratio`` of each record's present columns,
    rounded up, at least one and at most all but one (a record with a single present column hides none)."""
    count = present.sum(1, keepdim=True)                                            # (B, 1)
    target = (count * ratio).ceil().clamp(min=1).minimum(count - 1)                 # (B, 1)
    noise = torch.rand(present.shape, device=present.device).masked_fill(~present, 2.0)
    rank = noise.argsort(1).argsort(1)                                              # each column's rank in its row
    return (rank < target) & present


@METHODS.register("maskedcolumns")
class MaskedColumns(Method):
    """Hide ``mask_ratio`` of each record's present columns (made missing, as absent values are), encode
    the rest, and predict every hidden column from the record's features: numbers by squared error (in
    their unit scale), categories by cross-entropy over the column's vocabulary, text by the bag of its
    tokens (multi-label binary cross-entropy summed over the vocabulary, per distinct token of the bag;
    special tokens left out). Image columns
    may be hidden but are not predicted. The loss is the mean over the kinds the plan has of each kind's
    mean over hidden cells (VIME's mask estimation and feature reconstruction, by column; Yoon et al. 2020).

    Args:
        mask_ratio: fraction of a record's present columns hidden, in (0, 1).
        augment: hide columns of the record views (true) or of the raw records (false); the targets are
            always the raw values.
        decoder_width: hidden width of the shared decoder trunk.

    Logs ``mse_number``, ``ce_category``, ``bce_text`` where the plan has those kinds.
    """

    description = "masked-column reconstruction (records): hide columns, predict numbers, categories, text tokens"
    paper = "Yoon et al., VIME: Extending the Success of Self- and Semi-supervised Learning to Tabular Domain, NeurIPS 2020"
    modalities = ("record",)
    options = {
        "mask_ratio": Option("fraction of a record's present columns hidden", gt=0, lt=1),
        "augment": Option("hide columns of the record views (true) or of the raw records (false)"),
        "decoder_width": Option("hidden width of the decoder trunk", ge=1),
    }

    def __init__(self, backbone: Backbone, views: Views, mask_ratio: float = 0.3, augment: bool = True,
                 decoder_width: int = 256) -> None:
        super().__init__(backbone, views)
        layout = views.layout
        self.mask_ratio, self.augment = float(mask_ratio), bool(augment)
        self.numbers, self.categories, self.texts = layout.of("number"), layout.of("category"), layout.of("text")
        if not (self.numbers or self.categories or self.texts):
            raise SelfmetaError("method 'maskedcolumns' predicts number, category and text columns; the record has "
                                "only image columns")
        self.trunk = nn.Sequential(nn.Linear(backbone.num_features, decoder_width), nn.GELU())
        if self.numbers:
            self.number_head = nn.Linear(decoder_width, len(self.numbers))
        cards = [layout.columns[k]["cardinality"] for k in self.categories]
        self.category_heads = nn.ModuleList(nn.Linear(decoder_width, c) for c in cards)
        if self.texts:
            vocab = backbone.encoder.vocab_size
            self.text_heads = nn.ModuleList(nn.Linear(decoder_width, vocab) for _ in self.texts)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        layout = self.views.layout
        v = self.views(x) if self.augment else x
        present = layout.present(x) & layout.present(v)                             # (B, K)
        hidden = hide_columns(present, self.mask_ratio)                             # (B, K)
        h = self.trunk(self.backbone(layout.hide(v, hidden))).float()               # (B, W)
        losses, logs = [], {}
        with torch.autocast(h.device.type, enabled=False):
            if self.numbers:
                target = x[:, layout.probe[self.numbers].to(x.device)]             # (B, Kn)
                scored = hidden[:, self.numbers]
                if bool(scored.any()):
                    error = (self.number_head(h) - torch.nan_to_num(target)).pow(2)[scored].mean()
                    losses.append(error)
                    logs["mse_number"] = float(error.detach())
            terms = []
            for head, k in zip(self.category_heads, self.categories):
                rows = hidden[:, k]
                if bool(rows.any()):
                    target = x[rows, layout.columns[k]["offset"]].long()
                    terms.append(F.cross_entropy(head(h[rows]), target, reduction="sum"))
            count = int(hidden[:, self.categories].sum()) if self.categories else 0
            if count:
                loss = torch.stack(terms).sum() / count
                losses.append(loss)
                logs["ce_category"] = float(loss.detach())
            terms = []
            for j, k in enumerate(self.texts):
                rows = hidden[:, k]
                if bool(rows.any()):
                    ids = layout.segment(x, k)[rows].long()                        # (R, L)
                    bag = torch.zeros(len(ids), self.backbone.encoder.vocab_size, device=x.device)
                    bag.scatter_(1, ids, 1.0)[:, :SPECIAL_IDS] = 0                  # (R, V) multi-hot
                    # Summed over the vocabulary, per distinct token of the bag: a long review weighs as a short one.
                    terms.append(F.binary_cross_entropy_with_logits(self.text_heads[j](h[rows]), bag,
                                                                    reduction="none").sum(1) / bag.sum(1).clamp_min(1))
            if terms:
                loss = torch.cat(terms).mean()
                losses.append(loss)
                logs["bce_text"] = float(loss.detach())
        if not losses:  # nothing hidden in this batch (every record has one present column)
            return StepOutput(h.sum() * 0.0, logs)
        return StepOutput(torch.stack(losses).mean(), logs)
