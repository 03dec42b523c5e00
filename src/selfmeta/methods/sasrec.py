"""Next-item prediction on interaction sequences, and its self-supervised variants.

- ``sasrec``: SASRec trained by next-item prediction at every position with a softmax over all items (the
  cross-entropy variant that Petrov and Macdonald, RecSys 2023, found to match BERT4Rec);
- ``cl4srec``: plus CL4SRec's contrastive term (Xie et al., ICDE 2022): two views of each sequence (item crop,
  mask, reorder: the modality's views), NT-Xent between the users' states (in-batch negatives of this
  process: the term is local under torchrun);
- ``duorec``: plus DuoRec's contrastive regularization (Qiu et al., WSDM 2022): a model-level view (the same
  sequence through another dropout draw) against a supervised positive (another user's sequence prefix that is
  followed by the same item), in-batch negatives except those with the same next item.

Every method here runs on an :class:`~selfmeta.encoders.sequence.ItemSequenceEncoder` (``sasrec``); the
user's state after the last item is the feature ``embed`` gives, and the ranking protocol scores it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfmeta.data.dataset import Dataset
from selfmeta.encoders.base import Backbone
from selfmeta.encoders.sequence import SPECIAL, ItemSequenceEncoder, trim
from selfmeta.errors import SelfmetaError
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.modalities.base import Views
from selfmeta.objectives.ntxent import nt_xent_grouped
from selfmeta.options import Option

CONTRAST_OPTIONS = {
    "weight": Option("weight of the contrastive term beside next-item prediction (the papers use 0.1)", ge=0),
    "temperature": Option("softmax temperature of the contrastive term (the papers use 1.0)", gt=0),
    "similarity": Option("cosine, or dot (the papers' code; on MovieLens 100K's validation targets it gave "
                         "NDCG@10 0.075 for CL4SRec and 0.056 for DuoRec against 0.087 and 0.082 for cosine)",
                         choices=("dot", "cosine")),
}


def next_item_loss(encoder: ItemSequenceEncoder, states: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of every next item of ``x`` (B, L) given the causal states (B, L', d) before it, over
    all items. Targets are positions 1..L'-1 that hold a catalogue item."""
    targets = trim(x)[:, 1:states.shape[1]]                                           # (B, L'-1)
    valid = targets >= SPECIAL
    if not bool(valid.any()):
        return states.sum() * 0.0
    logits = encoder.catalogue_scores(states[:, :-1][valid])                          # (n, V - 3)
    return F.cross_entropy(logits.float(), targets[valid] - SPECIAL)


@METHODS.register("sasrec")
class NextItem(Method):
    """Next-item prediction at every position of every user's sequence, softmax over all items."""

    description = "SASRec next-item prediction: causal Transformer, softmax over all items at every position"
    paper = "Kang and McAuley, Self-Attentive Sequential Recommendation, ICDM 2018"
    modalities = ("interactions",)
    defaults = {"lr": 1e-3, "batch_size": 128}

    def __init__(self, backbone: Backbone, views: Views) -> None:
        super().__init__(backbone, views)
        if not isinstance(backbone.encoder, ItemSequenceEncoder):
            raise SelfmetaError(f"method {type(self).__name__.lower()!r} needs a sequence encoder (sasrec), "
                                f"got {type(backbone.encoder).__name__}")
        self.encoder: ItemSequenceEncoder = backbone.encoder

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        states = self.encoder.sequence(x)
        loss = next_item_loss(self.encoder, states, x)
        return StepOutput(loss, {"next_item": float(loss.detach())})


class ContrastiveNextItem(NextItem):
    """Next-item prediction plus a weighted contrastive term between two views of users' states."""

    options = CONTRAST_OPTIONS

    def __init__(self, backbone: Backbone, views: Views, weight: float = 0.1, temperature: float = 1.0,
                 similarity: str = "cosine") -> None:
        super().__init__(backbone, views)
        self.weight, self.temperature, self.normalize = weight, temperature, similarity == "cosine"


@METHODS.register("cl4srec")
class CL4SRec(ContrastiveNextItem):
    """SASRec + NT-Xent between two augmented views (item crop, mask, reorder) of each user's sequence."""

    description = "CL4SRec: SASRec + NT-Xent between two item crop/mask/reorder views of each sequence"
    paper = "Xie et al., Contrastive Learning for Sequential Recommendation, ICDE 2022"

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        b = len(x)
        states = self.encoder.sequence(x)
        rec = next_item_loss(self.encoder, states, x)
        z = self.encoder.forward_features(torch.cat([self.views(x), self.views(x)])).float()   # (2B, d)
        contrast = nt_xent_grouped(z[:b], z[b:], torch.arange(b, device=x.device), self.temperature, self.normalize)
        return StepOutput(rec + self.weight * contrast, {"next_item": float(rec.detach()),
                                                         "contrast": float(contrast.detach())})


@METHODS.register("duorec")
class DuoRec(ContrastiveNextItem):
    """SASRec + contrast between a dropout view and a same-next-item (supervised) view of sequence prefixes."""

    description = ("DuoRec: SASRec + contrast of a dropout view against another sequence with the same next "
                   "item; same-target negatives removed")
    paper = "Qiu et al., Contrastive Learning for Representation Degeneration Problem in Sequential Recommendation, WSDM 2022"
    def __init__(self, backbone: Backbone, views: Views, weight: float = 0.1, temperature: float = 1.0,
                 similarity: str = "cosine") -> None:
        super().__init__(backbone, views, weight, temperature, similarity)
        self.items: torch.Tensor | None = None     # (N, L) the training rows, for the supervised positives
        self.entries: torch.Tensor | None = None   # (E, 2) (row, position) of every catalogue item, by item
        self.starts: torch.Tensor | None = None    # (V + 1,) where each item's entries start

    def on_epoch_start(self, epoch: int, data: Dataset) -> None:
        """Index every (row, position) of the training rows by the item there: the positives are drawn from it."""
        items = data.take(torch.arange(len(data))).long()                                # (N, L)
        rows, positions = torch.nonzero(items[:, 1:] >= SPECIAL, as_tuple=True)
        positions = positions + 1                                                        # a prefix before each
        targets = items[rows, positions]
        order = torch.argsort(targets, stable=True)
        self.items = items
        self.entries = torch.stack([rows[order], positions[order]], 1)
        self.starts = torch.searchsorted(targets[order], torch.arange(self.encoder.item_embeddings().shape[0] + 1))

    def positives(self, rows: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For each anchor (training row ``rows``, next item ``targets``): another (row, position) whose item is
        the same; returns (their prefixes' rows (B, L), the positions, whether one was found (B,) bool)."""
        start, end = self.starts[targets], self.starts[targets + 1]
        draw = start + (torch.rand(len(targets)) * (end - start)).long().clamp_max((end - start - 1).clamp_min(0))
        chosen = self.entries[draw.clamp_max(len(self.entries) - 1)]                     # (B, 2)
        found = (end > start) & (chosen[:, 0] != rows)
        return self.items[chosen[:, 0]], chosen[:, 1], found

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        states = self.encoder.sequence(x)                                                # (B, L', d)
        rec = next_item_loss(self.encoder, states, x)
        lengths = (x != 0).sum(1)
        usable = lengths >= 2
        if self.weight == 0 or self.items is None or int(usable.sum()) < 2:
            return StepOutput(rec, {"next_item": float(rec.detach())})
        x, index, states, lengths = x[usable], index[usable], states[usable], lengths[usable]
        position = 1 + (torch.rand(len(x), device=x.device) * (lengths - 1)).long()     # (B,) target position
        targets = x.gather(1, position.unsqueeze(1)).squeeze(1)
        rows = torch.arange(len(x), device=x.device)
        unsup = self.encoder.sequence(x)[rows, position - 1]                             # another dropout draw
        prefixes, where, found = self.positives(index.cpu(), targets.cpu())
        sup = self.encoder.sequence(prefixes.to(x.device))[rows, where.to(x.device) - 1]
        sup = torch.where(found.to(x.device).unsqueeze(1), sup, states[rows, position - 1])
        contrast = nt_xent_grouped(unsup.float(), sup.float(), targets, self.temperature, self.normalize)
        return StepOutput(rec + self.weight * contrast, {"next_item": float(rec.detach()), "contrast": float(contrast.detach()),
                                                         "supervised": float(found.float().mean())})
