"""Encoders of interaction sequences: a user's items in time order -> the user's state, scored against every item.

Contract (:class:`ItemSequenceEncoder`, beside the encoder contract): ``sequence(x)`` gives the state after
each position, ``(B, L', d)``, where position t has seen items 0..t only (causal), so that one pass trains
next-item prediction at every position; ``forward_features(x)`` is the state after each row's last item,
the user's representation; ``item_embeddings()`` (V, d) the items the states are scored against (a dot
product: SASRec shares them with the input embedding). The next-item methods and the ranking protocol ask
only this.

SASRec (Kang and McAuley, ICDM 2018): item and learned position embeddings, pre-norm Transformer blocks with
a causal mask, a final layer norm. Rows are left-aligned (padding after the last item), so no position ever
attends to padding under the causal mask, and no padding mask is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfmeta.encoders.base import ENCODERS, Encoder
from selfmeta.errors import SelfmetaError
from selfmeta.options import Option

PAD = 0  # selfmeta.modalities.interactions.PAD (encoders sit below modalities)
SPECIAL = 3  # ids below this are padding, unseen and [MASK]: never recommended


def sequence_lengths(x: torch.Tensor) -> torch.Tensor:
    return (x != PAD).sum(1)


def trim(x: torch.Tensor) -> torch.Tensor:
    """(B, L) ids -> (B, L'): the columns up to the batch's longest row (padding after it changes nothing
    under the causal mask)."""
    if x.numel() == 0:
        return x
    return x[:, : max(int(sequence_lengths(x).max()), 1)]


class ItemSequenceEncoder(Encoder):
    """Contract of the interactions encoders; see the module docstring."""

    modalities = ("interactions",)
    inputs = ("num_items", "side")

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L', d) causal states, L' <= L (the batch's padding columns may be cut)."""
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:
        """(V, d): what the states are scored against, one row per id (the special ids included)."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, d): the state after each row's last item."""
        h = self.sequence(x)
        last = (sequence_lengths(x) - 1).clamp(0, h.shape[1] - 1)
        return h[torch.arange(len(h), device=h.device), last]

    def catalogue_scores(self, states: torch.Tensor) -> torch.Tensor:
        """(..., d) states -> (..., V - 3) scores of the catalogue's items (id i at column i - 3): what
        training's softmax runs over."""
        return states @ self.item_embeddings()[SPECIAL:].T

    def scores(self, states: torch.Tensor) -> torch.Tensor:
        """(..., d) states -> (..., V) scores of every id; the special ids (padding, unseen, [MASK]) -inf."""
        scores = self.catalogue_scores(states)
        return torch.cat([torch.full_like(scores[..., :SPECIAL], float("-inf")), scores], dim=-1)


@ENCODERS.register("sasrec")
class SASRec(ItemSequenceEncoder):
    """Self-attentive sequential recommendation: causal Transformer over the item sequence."""

    description = "SASRec: item + position embeddings, causal pre-norm Transformer blocks (Kang & McAuley 2018)"
    options = {
        "dim": Option("width of the item embeddings and of the blocks", ge=1),
        "depth": Option("Transformer blocks", ge=1),
        "heads": Option("attention heads; must divide dim", ge=1),
        "dropout": Option("dropout on embeddings, attention and feed-forward: SASRec's 0.5 for sparse data (on "
                          "MovieLens 100K's validation targets NDCG@10 0.098 against 0.083 for 0.2), 0.2 for dense",
                          ge=0, lt=1),
    }

    def __init__(self, input_shape: tuple[int, ...], num_items: int, side: dict | None = None, dim: int = 64,
                 depth: int = 2, heads: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        if dim % heads:
            raise SelfmetaError(f"encoder 'sasrec': heads={heads} must divide dim={dim}")
        if num_items <= SPECIAL:
            raise SelfmetaError("encoder 'sasrec': the item vocabulary holds no item")
        self.max_length = input_shape[0]
        self.num_features = dim
        self.items = nn.Embedding(num_items, dim, padding_idx=PAD)
        self.positions = nn.Embedding(self.max_length, dim)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=dim, dropout=dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.items.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.items.weight[PAD].zero_()
        self.side = side is not None
        if side is not None:  # each item's name tokens and categories (not saved: the vocabulary holds them)
            self.register_buffer("names", side["names"].long(), persistent=False)              # (V, T)
            self.register_buffer("categories", side["categories"].float(), persistent=False)   # (V, C)
            self.name_words = nn.Embedding(side["name_vocabulary"], dim, padding_idx=PAD)
            self.category_table = nn.Linear(self.categories.shape[1], dim, bias=False)
            nn.init.normal_(self.name_words.weight, std=dim ** -0.5)
            nn.init.normal_(self.category_table.weight, std=dim ** -0.5)

    def item_embeddings(self) -> torch.Tensor:
        """(V, d): the item's own embedding, plus with side information the mean of its name's word
        embeddings and of its categories' (fastText's bag and a multi-hot category table)."""
        table = self.items.weight
        if not self.side:
            return table
        present = (self.names != PAD).float()                                            # (V, T)
        words = (self.name_words(self.names) * present.unsqueeze(2)).sum(1) / present.sum(1, keepdim=True).clamp_min(1)
        kinds = self.category_table(self.categories) / self.categories.sum(1, keepdim=True).clamp_min(1)
        return table + words + kinds

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        x = trim(x)                                                                      # (B, L')
        t = x.shape[1]
        table = self.item_embeddings()
        h = F.embedding(x, table) * self.num_features ** 0.5 + self.positions.weight[:t]  # (B, L', d)
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=x.device, dtype=h.dtype)
        h = self.blocks(self.dropout(h), mask=mask, is_causal=True)
        return self.norm(h)

