"""Interaction sequences: each user's items in time order -> ``(N, L)`` item ids (``int32`` stored, ``int64``
on the device), oldest first, padded with 0 at the end; ids 0, 1, 2 are padding, an item the training split
never showed, and ``[MASK]``; the catalogue's items are 3 and up.

The source gives each user's items as ``Dataset.raw`` (an object array of string arrays, item IDs as written)
and the users' IDs as ``Dataset.keys``; the :class:`ItemVocabulary` is fitted on the training split's
sequences (every item seen there gets an id, in natural order of its ID), saved with the run
(``items.json``) and reused by every later command. A sequence longer than ``max_length`` keeps its most
recent items (SASRec's rule: the model sees the last L interactions), or with ``input.keep=first`` its first
ones (cold-start tasks are a user's first interactions).

Side information (``input.side``, on by default): what the source knows of each item (``Dataset.info``:
MovieLens's titles and genres) is kept with the vocabulary, its names tokenized by a tokenizer trained on
the catalogue's names (:mod:`selfmeta.modalities.text`), and given to the encoder (``side``), which adds it
to each item's embedding: items seen a few times borrow from the titles and genres they share with others.

Every row is a user's history; the protocols that score next-item prediction read the row's last item as the
target and the items before it as the history (:mod:`selfmeta.evaluation.ranking`): the leave-one-out
split of the sources makes the train split's rows end two items before a user's last, the validation rows
one before, the test rows at the last one.

Views (CL4SRec, Xie et al. ICDE 2022): item crop (a contiguous ``crop`` fraction of the sequence), item mask
(each item becomes ``[MASK]`` with probability ``mask``) and item reorder (a contiguous ``reorder`` fraction
shuffled); each view draws one of the enabled three per sequence, as the paper does. Batched; every view
keeps at least one item and stays left-aligned.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from selfmeta.errors import SelfmetaError
from selfmeta.modalities.base import MODALITIES, IdSequences, Preprocessor, Views
from selfmeta.modalities.text import Tokenizer
from selfmeta.options import Option, check_options

SPECIAL_ITEMS = ("[PAD]", "[UNK]", "[MASK]")
PAD, UNK, MASK = 0, 1, 2
FIRST_ITEM = len(SPECIAL_ITEMS)
MAX_ITEMS_JSON = 64 * 2**20  # a saved vocabulary larger than this is refused (some millions of item IDs)
SIDE_VOCABULARY = 4000  # tokens of the item names' tokenizer (MovieLens 100K's titles hold about 3,000 words)
SIDE_TOKENS = 16        # tokens kept per name


def _natural(name: str) -> tuple:
    """Sort key of item IDs: numeric IDs by value (2 before 10), then the others alphabetically."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


class ItemVocabulary(Preprocessor):
    """Item IDs -> ids ``3..V-1``, learned from the training split's sequences; unseen IDs become ``[UNK]``."""

    kind = "item vocabulary"
    file = "items.json"
    options = {"max_length": Option("items kept per user; the others are cut", ge=2),
               "keep": Option("which items a longer sequence keeps: last (the most recent: next-item prediction) "
                              "or first (a user's first interactions: cold-start tasks)", choices=("last", "first")),
               "side": Option("learn from what the source knows of the items (MovieLens: titles and genres) "
                              "where it knows it (on MovieLens 100K's validation targets, SASRec's NDCG@10 0.105 "
                              "with, 0.098 without)")}

    def __init__(self, max_length: int = 50, keep: str = "last", side: bool = True) -> None:
        if max_length < 2:
            raise SelfmetaError(f"input.max_length must be at least 2 items (a history and a target), got {max_length}")
        self.max_length, self.keep, self.side = max_length, keep, side
        self.items: list[str] = []      # item ID of id FIRST_ITEM + i
        self.index: Any = None          # pandas Index of the item IDs: one hashed lookup for a batch
        self.names: list[str] | None = None              # side information: each item's name (title)...
        self.categories: list[list[str]] | None = None   # ...and categories (genres), in id order
        self.tokenizer: Tokenizer | None = None          # the names' tokenizer, trained on the catalogue's names

    def fit(self, raw: np.ndarray, info: dict[str, dict[str, Any]] | None = None) -> "ItemVocabulary":
        """The catalogue: every item of the training rows; with ``side`` and ``info``, each item's name and
        categories (an item the source does not describe has none)."""
        seen = np.unique(np.concatenate([np.asarray(s, dtype=str) for s in raw])) if len(raw) else []
        if len(seen) == 0:
            raise SelfmetaError("the training split holds no interaction")
        self.set_items(sorted(seen.tolist(), key=_natural))
        if self.side and info:
            self.names = [str(info.get(i, {}).get("name") or "") for i in self.items]
            self.categories = [sorted({str(c) for c in info.get(i, {}).get("categories") or ()}) for i in self.items]
            self.tokenizer = Tokenizer(vocab_size=SIDE_VOCABULARY, max_length=SIDE_TOKENS, min_frequency=2)
            self.tokenizer.fit(np.array(self.names, dtype=object))
        return self

    def side_inputs(self) -> dict[str, torch.Tensor] | None:
        """Side information as the encoder takes it: ``names`` (V, 16) token ids of each id's name (0 rows for
        the special ids), ``categories`` (V, C) float multi-hot over the sorted category names; None without."""
        if self.names is None or self.tokenizer is None:
            return None
        names = torch.zeros(self.num_ids, SIDE_TOKENS, dtype=torch.long)
        names[FIRST_ITEM:] = self.tokenizer(np.array(self.names, dtype=object)).long()
        names[FIRST_ITEM:][torch.tensor([not n for n in self.names], dtype=torch.bool)] = 0  # no name: no words
        kinds = sorted({c for cs in self.categories for c in cs})
        column = {c: j for j, c in enumerate(kinds)}
        categories = torch.zeros(self.num_ids, max(len(kinds), 1))
        for i, cs in enumerate(self.categories):
            categories[FIRST_ITEM + i, [column[c] for c in cs]] = 1.0
        return {"names": names, "categories": categories, "name_vocabulary": self.tokenizer.vocab_size}

    def set_items(self, items: list[str]) -> None:
        import pandas as pd

        self.items = list(items)
        self.index = pd.Index(self.items, dtype=object)

    @property
    def num_ids(self) -> int:
        """Ids the encoder embeds: the special ones and the catalogue."""
        return FIRST_ITEM + len(self.items)

    def item_id(self, index: int) -> str:
        """The item ID of id ``index`` (a catalogue id, 3 and up)."""
        return self.items[index - FIRST_ITEM]

    def encode(self, items: np.ndarray) -> np.ndarray:
        """(n,) item IDs -> (n,) int64 ids, ``[UNK]`` for the unseen (one hashed lookup for all)."""
        ids = self.index.get_indexer(np.asarray(items, dtype=str).astype(object))
        return np.where(ids < 0, UNK, ids + FIRST_ITEM).astype(np.int64)

    def __call__(self, raw: np.ndarray) -> torch.Tensor:
        """(N,) sequences of item IDs -> (N, max_length) int32 ids, each cut to its last (``keep``: first)
        max_length items, left-aligned, padded with 0."""
        sizes = np.fromiter((len(s) for s in raw), dtype=np.int64, count=len(raw))
        kept = np.minimum(sizes, self.max_length)
        first = self.keep == "first"
        flat = np.concatenate([np.asarray(s, dtype=str)[slice(0, k) if first else slice(len(s) - k, None)]
                               for s, k in zip(raw, kept)]) if len(raw) else []
        rows = np.repeat(np.arange(len(raw)), kept)
        cols = np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)
        out = np.zeros((len(raw), self.max_length), dtype=np.int32)
        out[rows, cols] = self.encode(flat)
        return torch.from_numpy(out)

    def encoder_inputs(self) -> dict[str, Any]:
        return {"num_items": self.num_ids, "side": self.side_inputs()}

    def to_json(self) -> str:
        saved = {"selfmeta_items": {"max_length": self.max_length, "keep": self.keep, "side": self.side},
                 "items": self.items}
        if self.tokenizer is not None:
            saved["side"] = {"names": self.names, "categories": self.categories, "tokenizer": self.tokenizer.to_json()}
        return json.dumps(saved)

    @classmethod
    def from_json(cls, text: str, where: str) -> "ItemVocabulary":
        if len(text) > MAX_ITEMS_JSON:
            raise SelfmetaError(f"{where}: the saved item vocabulary is larger than {MAX_ITEMS_JSON >> 20} MiB")
        try:
            saved = json.loads(text)
            vocabulary = cls(**check_options("the saved item vocabulary", cls, saved["selfmeta_items"]))
            items = saved["items"]
            if not (isinstance(items, list) and all(isinstance(i, str) for i in items)) or len(set(items)) != len(items):
                raise ValueError("items must be distinct strings")
            side = saved.get("side")
            if side is not None:
                names, categories = side["names"], side["categories"]
                if not (isinstance(names, list) and isinstance(categories, list)
                        and len(names) == len(categories) == len(items)
                        and all(isinstance(n, str) for n in names)
                        and all(isinstance(c, list) and all(isinstance(k, str) for k in c) for c in categories)):
                    raise ValueError("side information must give a name and a list of categories per item")
                vocabulary.names, vocabulary.categories = names, categories
                vocabulary.tokenizer = Tokenizer.from_json(side["tokenizer"], where)
        except SelfmetaError:
            raise
        except Exception as exc:  # json, KeyError, TypeError, ValueError
            raise SelfmetaError(f"{where}: not a selfmeta item vocabulary ({type(exc).__name__}: {exc})"
                                .splitlines()[0]) from None
        vocabulary.set_items(items)
        return vocabulary


def sequence_lengths(x: torch.Tensor) -> torch.Tensor:
    """(B, L) ids, left-aligned, 0 = padding -> (B,) int64 item counts."""
    return (x != PAD).sum(1)


def last_items(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) rows -> (histories (B, L) with each row's last item removed, targets (B,) that last item)."""
    lengths = sequence_lengths(x)
    last = (lengths - 1).clamp_min(0).unsqueeze(1)                                     # (B, 1)
    targets = x.gather(1, last).squeeze(1)
    return x.scatter(1, last, PAD), targets


class InteractionViews(Views):
    """CL4SRec's item crop, mask and reorder; one of the enabled ones per sequence and view."""

    description = "item crop, item mask, item reorder (CL4SRec): one drawn per sequence"
    tokens = True  # its items are ids (methods that predict them ask)
    options = {
        "crop": Option("fraction of a sequence an item crop keeps, as one contiguous span; 0 turns it off",
                       ge=0, le=1),
        "mask": Option("probability an item becomes [MASK] in an item mask; 0 turns it off", ge=0, lt=1),
        "reorder": Option("fraction of a sequence an item reorder shuffles, one contiguous span; 0 turns it off",
                          ge=0, le=1),
    }

    def __init__(self, input_shape: tuple[int, ...], crop: float = 0.6, mask: float = 0.3,
                 reorder: float = 0.6) -> None:
        super().__init__()
        self.o = SimpleNamespace(crop=crop, mask=mask, reorder=reorder)

    @staticmethod
    def span(lengths: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        """A random contiguous span of each sequence covering ``fraction`` of it: (start, width), (B,) each;
        at least one item."""
        width = (fraction * lengths).floor().long().clamp_min(1).minimum(lengths.clamp_min(1))
        start = (torch.rand(len(lengths), device=lengths.device) * (lengths - width + 1)).long()
        return start, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape
        o = self.o
        steps = torch.arange(t, device=x.device)                                              # (L,)
        lengths = sequence_lengths(x)                                                          # (B,)
        views = []
        if o.crop > 0:
            start, width = self.span(lengths, o.crop)
            source = (start.unsqueeze(1) + steps).clamp_max(t - 1)                            # (B, L)
            views.append(x.gather(1, source).masked_fill(steps >= width.unsqueeze(1), PAD))
        if o.mask > 0:
            hide = (torch.rand(b, t, device=x.device) < o.mask) & (x != PAD)
            views.append(x.masked_fill(hide, MASK))
        if o.reorder > 0:
            start, width = self.span(lengths, o.reorder)
            inside = (steps >= start.unsqueeze(1)) & (steps < (start + width).unsqueeze(1))   # (B, L)
            # Keys: positions outside the span keep their own; inside, a random order within the span.
            key = torch.where(inside, start.unsqueeze(1) + torch.rand(b, t, device=x.device) * width.unsqueeze(1),
                              steps.to(torch.float32))
            views.append(x.gather(1, torch.argsort(key, dim=1, stable=True)))
        if not views:
            return x
        choice = torch.randint(len(views), (b, 1), device=x.device)
        out = views[0]
        for k, view in enumerate(views[1:], 1):
            out = torch.where(choice == k, view, out)
        return out


@MODALITIES.register("interactions")
class Interactions(IdSequences):
    name = "interactions"
    description = "users' items in time order (behaviour sequences) -> (N, L) item ids, oldest first; 0 = padding"
    ids = "item ids"
    default_encoder = "sasrec"
    views = InteractionViews
    preprocessor = ItemVocabulary

    def from_array(self, x: torch.Tensor) -> torch.Tensor:
        raise SelfmetaError("interactions come as a table of (user, item, time) rows or a list of item-ID "
                            "sequences, not as an array of numbers")

    def raw_items(self, X: Any, min_items: int = 1) -> np.ndarray:
        """Users' item-ID sequences (a list of lists or arrays, each in time order) -> (N,) object array of
        string arrays."""
        if isinstance(X, str) or not hasattr(X, "__len__"):
            raise SelfmetaError("X must be a list of users' item sequences, got a single " + type(X).__name__)
        sequences = list(X)
        if len(sequences) < min_items:
            raise SelfmetaError(f"X holds {len(sequences)} sequence(s); at least {min_items} are needed")
        raw = np.empty(len(sequences), dtype=object)
        for i, sequence in enumerate(sequences):
            if isinstance(sequence, (str, bytes)) or not hasattr(sequence, "__len__") or len(sequence) == 0:
                raise SelfmetaError(f"X[{i}] must be a non-empty sequence of item IDs (a user's items in time "
                                    f"order), got {type(sequence).__name__}")
            raw[i] = np.asarray([str(item) for item in sequence])
        return raw
