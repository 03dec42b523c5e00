"""Text: documents become ``(N, L)`` token ids (``int32`` stored, ``int64`` on the device), 0 = padding.

The source gives the documents as ``Dataset.raw``; the :class:`Tokenizer` (Hugging Face ``tokenizers``,
BPE or WordPiece) is trained on the training split's documents when a run starts, saved in the run (the
weights' description, and ``tokenizer.json`` in the run directory) and reused by every later command, so
``evaluate`` and ``embed`` see exactly the ids the encoder learned. Nothing is downloaded.

Every document is cut to ``max_length`` tokens and padded at its end; the encoders cut a batch to its
longest document, so short messages cost short sequences. Ids 0, 1, 2 are ``[PAD]``, ``[UNK]``,
``[MASK]`` (an empty document is one ``[UNK]``, so that it still has a token to pool).

Views (``(B, L)`` ids, batched, each document keeps at least one token): span cropping (a contiguous part
of the document), token dropout (tokens deleted, the rest closed up), local shuffling (each token moves at
most ``shuffle`` places: the noisy-sort of Lample et al. 2018) and masking (tokens replaced by ``[MASK]``).
With all four off, two views differ only by the encoder's dropout: SimCSE (Gao et al. 2021), with
``encoder.dropout`` above 0. The defaults are strong views (a fifth to all of a document, 30% of its tokens
deleted, moves of up to 2 places): chosen on validation messages of SMS spam's train split
(``benchmarks/sms_pilot.py``), where milder views (crop 0.6-1, 10% deleted) let 60 s of SimCLR learn an
easy task, 17 points of spam F1 lower at 10 labels per class; SimCSE's dropout alone was lower still.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from selfmeta.errors import SelfmetaError
from selfmeta.modalities.base import MODALITIES, IdSequences, Preprocessor, Views
from selfmeta.options import Option, check_options

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[MASK]")
PAD, UNK, MASK = 0, 1, 2
MAX_TOKENIZER_JSON = 64 * 2**20  # a saved tokenizer larger than this is refused (a vocabulary of ~1M tokens)


class Tokenizer(Preprocessor):
    """A BPE or WordPiece tokenizer trained on the documents of a training split.

    Both split on whitespace and punctuation first (BERT's pre-tokenizer) and normalize as BERT does
    (lower-cased and accents stripped when ``lowercase``). BPE marks a word's last piece with ``</w>``,
    WordPiece a word's continuation pieces with ``##``: the fastText encoder reads word boundaries from them.
    """

    kind = "tokenizer"
    file = "tokenizer.json"
    options = {
        "model": Option("bpe or wordpiece", choices=("bpe", "wordpiece")),
        "vocab_size": Option("tokens in the vocabulary, the 3 special ones included", ge=1),
        "lowercase": Option("lower-case and strip accents before tokenizing"),
        "max_length": Option("tokens kept per document; the rest is cut", ge=1),
        "min_frequency": Option("times a piece must occur in the corpus to be merged into the vocabulary", ge=1),
    }

    def __init__(self, model: str = "wordpiece", vocab_size: int = 8000, lowercase: bool = True,
                 max_length: int = 128, min_frequency: int = 2) -> None:
        if vocab_size <= len(SPECIAL_TOKENS):
            raise SelfmetaError(f"input.vocab_size={vocab_size} leaves no room beside the {len(SPECIAL_TOKENS)} "
                                f"special tokens ({', '.join(SPECIAL_TOKENS)}); give at least {len(SPECIAL_TOKENS) + 1}")
        if max_length < 1:
            raise SelfmetaError(f"input.max_length must be at least 1 token, got {max_length}")
        self.model, self.vocab_size, self.lowercase = model, vocab_size, lowercase
        self.max_length, self.min_frequency = max_length, min_frequency
        self.tokenizer: Any = None  # tokenizers.Tokenizer once fitted

    def fit(self, raw: np.ndarray) -> "Tokenizer":
        from tokenizers import Tokenizer as HFTokenizer, models, normalizers, pre_tokenizers, trainers

        specials = list(SPECIAL_TOKENS)
        if self.model == "bpe":
            tokenizer = HFTokenizer(models.BPE(unk_token="[UNK]", end_of_word_suffix="</w>"))
            trainer = trainers.BpeTrainer(vocab_size=self.vocab_size, min_frequency=self.min_frequency,
                                          special_tokens=specials, end_of_word_suffix="</w>", show_progress=False)
        else:
            tokenizer = HFTokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
            trainer = trainers.WordPieceTrainer(vocab_size=self.vocab_size, min_frequency=self.min_frequency,
                                                special_tokens=specials, continuing_subword_prefix="##",
                                                show_progress=False)
        tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                          strip_accents=self.lowercase, lowercase=self.lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.train_from_iterator((str(d) for d in raw), trainer=trainer, length=len(raw))
        if [tokenizer.token_to_id(t) for t in specials] != [PAD, UNK, MASK]:  # the trainers put them first
            raise SelfmetaError("the tokenizer did not give the special tokens ids 0, 1, 2")
        self.tokenizer = tokenizer
        return self

    def __call__(self, raw: np.ndarray) -> torch.Tensor:
        """(N,) documents -> (N, max_length) int32 ids, each document cut to max_length, padded with 0."""
        encodings = self.tokenizer.encode_batch([str(d) for d in raw], add_special_tokens=False)
        lengths = np.fromiter((min(len(e.ids), self.max_length) for e in encodings), dtype=np.int64, count=len(raw))
        ids = np.zeros((len(raw), self.max_length), dtype=np.int32)
        flat = np.fromiter((i for e in encodings for i in e.ids[: self.max_length]), dtype=np.int32,
                           count=int(lengths.sum()))
        rows = np.repeat(np.arange(len(raw)), lengths)
        cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        ids[rows, cols] = flat
        ids[lengths == 0, 0] = UNK  # an empty document: one [UNK], so that pooling has a token
        return torch.from_numpy(ids)

    @property
    def vocabulary(self) -> list[str]:
        """The token string of every id, in id order."""
        vocab = self.tokenizer.get_vocab()
        out = [""] * len(vocab)
        for token, index in vocab.items():
            out[index] = token
        return out

    def encoder_inputs(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary}

    def to_json(self) -> str:
        options = {"model": self.model, "vocab_size": self.vocab_size, "lowercase": self.lowercase,
                   "max_length": self.max_length, "min_frequency": self.min_frequency}
        return json.dumps({"selfmeta_tokenizer": options, "tokenizer": json.loads(self.tokenizer.to_str())})

    @classmethod
    def from_json(cls, text: str, where: str) -> "Tokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        if len(text) > MAX_TOKENIZER_JSON:
            raise SelfmetaError(f"{where}: the saved tokenizer is larger than {MAX_TOKENIZER_JSON >> 20} MiB")
        try:
            saved = json.loads(text)
            options = check_options("the saved tokenizer", cls, saved["selfmeta_tokenizer"])
            tokenizer = cls(**options)
            tokenizer.tokenizer = HFTokenizer.from_str(json.dumps(saved["tokenizer"]))
        except SelfmetaError:
            raise
        except Exception as exc:  # json, KeyError, TypeError, the tokenizers library's own Exception
            raise SelfmetaError(f"{where}: not a selfmeta tokenizer ({type(exc).__name__}: {exc})".splitlines()[0]) from None
        if [tokenizer.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] != [PAD, UNK, MASK]:
            raise SelfmetaError(f"{where}: not a selfmeta tokenizer (special tokens)")
        return tokenizer


def document_lengths(x: torch.Tensor) -> torch.Tensor:
    """(B, L) ids, left-aligned, 0 = padding -> (B,) int64 token counts."""
    return (x != PAD).sum(1)


def left_align(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, L) ids with the tokens where ``keep`` (B, L) bool closed up to the left, in order; the rest padding."""
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)       # kept positions first, in order
    out = x.gather(1, order)
    count = keep.sum(1, keepdim=True)
    return out.masked_fill(torch.arange(x.shape[1], device=x.device) >= count, PAD)


class TextViews(Views):
    """Span cropping, token dropout, local shuffling and masking of token ids, batched."""

    description = "span cropping, token dropout, local token shuffling, masking ([MASK]); SimCSE with all off"
    tokens = True  # its items are token ids (methods that predict tokens, as reconstruction does, ask)
    options = {
        "crop": Option("fraction of a document's tokens a view keeps as one contiguous span, (low, high)",
                       gt=0, le=1, ordered=True),
        "dropout": Option("probability a token is deleted (the rest closed up)", ge=0, lt=1),
        "shuffle": Option("most places a token moves in the local shuffle; 0 turns it off", ge=0),
        "mask": Option("probability a token becomes [MASK]", ge=0, lt=1),
    }

    def __init__(self, input_shape: tuple[int, ...], crop: tuple[float, float] = (0.2, 1.0), dropout: float = 0.3,
                 shuffle: int = 2, mask: float = 0.1) -> None:
        super().__init__()
        self.o = SimpleNamespace(crop=tuple(crop), dropout=dropout, shuffle=shuffle, mask=mask)
        self.length = input_shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape
        o = self.o
        steps = torch.arange(t, device=x.device)                                     # (L,)
        lengths = document_lengths(x)                                                 # (B,)
        if o.crop != (1.0, 1.0):
            fraction = torch.empty(b, device=x.device).uniform_(*o.crop)
            width = (fraction * lengths).ceil().long().clamp(1, None).minimum(lengths.clamp_min(1))   # (B,)
            start = (torch.rand(b, device=x.device) * (lengths - width + 1)).long()                # (B,)
            source = (start.unsqueeze(1) + steps).clamp_max(t - 1)                                 # (B, L)
            x = x.gather(1, source).masked_fill(steps >= width.unsqueeze(1), PAD)
            lengths = width
        if o.dropout > 0:
            present = steps < lengths.unsqueeze(1)                                                 # (B, L)
            keep = present & (torch.rand(b, t, device=x.device) >= o.dropout)
            keep[:, 0] |= ~keep.any(1)                                                             # one token stays
            x = left_align(x, keep)
            lengths = keep.sum(1)
        if o.shuffle > 0:
            present = steps < lengths.unsqueeze(1)
            key = steps + torch.rand(b, t, device=x.device) * (o.shuffle + 1)                      # noisy positions
            key = key.masked_fill(~present, float("inf"))                                          # padding stays last
            x = x.gather(1, torch.argsort(key, dim=1))
        if o.mask > 0:
            hide = (torch.rand(b, t, device=x.device) < o.mask) & (x != PAD)
            x = x.masked_fill(hide, MASK)
        return x


@MODALITIES.register("text")
class Text(IdSequences):
    name = "text"
    description = "text documents -> (N, L) token ids of a tokenizer trained on the run's own corpus; 0 = padding"
    ids = "token ids"
    default_encoder = "fasttext"
    views = TextViews
    preprocessor = Tokenizer

    def from_array(self, x: torch.Tensor) -> torch.Tensor:
        raise SelfmetaError("text comes as a list of strings (documents), not as an array of numbers")

    def documents(self, raw: Any) -> np.ndarray | None:
        return raw
