"""The record encoder: one small encoder per column kind, each column a token, then a fusion module.

Column tokens ``(B, K, dim)``, one per column of the plan (:mod:`selfmeta.modalities.record`):
- numbers: periodic embeddings (Gorishniy et al., "On Embeddings for Numerical Features in Tabular Deep
  Learning", NeurIPS 2022: ``ReLU(Linear([sin 2πcv, cos 2πcv]))`` with learned frequencies ``c`` per column,
  their PLR) or a plain linear map ``v w + b``;
- categories: an embedding per category of every column (index 0 = missing, 1 = unknown, learned too);
- text: a text encoder of the registry (``fasttext`` by default), shared by every text column, then a linear
  map to ``dim``;
- images: an image encoder of the registry (``conv4`` by default), shared by every image column, then linear.

A missing column's token is a learned "missing" vector of that column: the indicator the model sees. Every
token gets a learned column embedding. Fusion (``fusion``):
- ``attention``: a [CLS] token and the column tokens through a pre-norm Transformer (FT-Transformer,
  Gorishniy et al. 2021); the features are the normalized [CLS] output (``num_features`` = ``dim``);
- ``concat``: the column tokens concatenated, then an MLP to ``num_features``.

``parts`` are the column kinds present; ``forward_part(x, kind)`` is that kind's own embedding (its column
tokens, concatenated in plan order), before fusion: ``selfmeta embed --part text``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from selfmeta.encoders.base import ENCODERS, Encoder, build_encoder
from selfmeta.errors import SelfmetaError
from selfmeta.encoders.text import PAD, UNK
from selfmeta.options import Option

IMAGE_CHANNELS = 3                 # image columns are RGB
IMAGE_MEAN, IMAGE_STD = 0.5, 0.25  # fixed pixel scaling of image columns (statistics of the pixels are not fitted)


class Layout:
    """Where each column sits in a ``(B, D)`` batch of items, as index tensors, and what "missing" is there.

    ``fill`` (D,): the value of a missing column at each position (NaN for numbers and images, 0 for
    categories and text); ``column`` (D,): the column each position belongs to; ``probe`` (K,): one position
    per column that tells whether it is present (the first).
    """

    def __init__(self, columns: list[dict[str, Any]]) -> None:
        self.columns = columns
        self.kinds = [c["kind"] for c in columns]
        fill, owner = [], []
        for k, c in enumerate(columns):
            missing = math.nan if c["kind"] in ("number", "image") else 0.0
            fill += [missing] * c["size"]
            owner += [k] * c["size"]
        self.fill = torch.tensor(fill, dtype=torch.float32)
        self.column = torch.tensor(owner, dtype=torch.long)
        self.probe = torch.tensor([c["offset"] for c in columns], dtype=torch.long)
        self.nan_fill = torch.tensor([c["kind"] in ("number", "image") for c in columns])

    def of(self, kind: str) -> list[int]:
        """Indices of the columns of ``kind``."""
        return [k for k, c in enumerate(self.columns) if c["kind"] == kind]

    def present(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) items -> (B, K) bool: which columns have a value."""
        probe = x[:, self.probe.to(x.device)]
        return torch.where(self.nan_fill.to(x.device), torch.isfinite(probe), probe != 0)

    def hide(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """(B, D) items with the columns where ``hidden`` (B, K) bool made missing."""
        where = hidden[:, self.column.to(x.device)]
        return torch.where(where, self.fill.to(device=x.device, dtype=x.dtype), x)

    def segment(self, x: torch.Tensor, k: int) -> torch.Tensor:
        c = self.columns[k]
        return x[:, c["offset"]: c["offset"] + c["size"]]


class PeriodicNumbers(nn.Module):
    """(B, Kn) scaled numbers -> (B, Kn, dim): per column, ReLU(W [sin 2πcv, cos 2πcv] + b) (PLR)."""

    def __init__(self, columns: int, dim: int, frequencies: int = 16, sigma: float = 0.5) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(columns, frequencies) * sigma)   # (Kn, F)
        self.weight = nn.Parameter(torch.randn(columns, 2 * frequencies, dim) / math.sqrt(2 * frequencies))
        self.bias = nn.Parameter(torch.zeros(columns, dim))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        angle = 2 * math.pi * v.unsqueeze(-1) * self.frequencies                       # (B, Kn, F)
        features = torch.cat([angle.sin(), angle.cos()], -1)                           # (B, Kn, 2F)
        return torch.relu(torch.einsum("bkf,kfd->bkd", features, self.weight) + self.bias)


class LinearNumbers(nn.Module):
    """(B, Kn) -> (B, Kn, dim): v w_k + b_k per column."""

    def __init__(self, columns: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(columns, dim) / math.sqrt(dim))
        self.bias = nn.Parameter(torch.zeros(columns, dim))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v.unsqueeze(-1) * self.weight + self.bias


@ENCODERS.register("fusion")
class Fusion(Encoder):
    """Per-kind column encoders and a fusion over the column tokens (module docstring).

    Shapes: x (B, D) items of the column plan -> (B, num_features).
    """

    modalities = ("record",)
    inputs = ("columns", "vocabulary")
    description = "records: a token per column (numbers, categories, text, images), fused by attention or an MLP"
    options = {
        "dim": Option("size of each column token", ge=1),
        "fusion": Option("attention (FT-Transformer over the column tokens) or concat (an MLP)",
                         choices=("attention", "concat")),
        "depth": Option("Transformer layers of the attention fusion", ge=1),
        "heads": Option("attention heads (dim must be a multiple)", ge=1),
        "dropout": Option("dropout in the fusion", ge=0, lt=1),
        "num_features": Option("features of the concat fusion (attention: dim)", ge=1),
        "numbers": Option("number embedding: periodic (PLR) or linear", choices=("periodic", "linear")),
        "text_encoder": Option("encoder of the text columns (a text encoder of the registry)"),
        "image_encoder": Option("encoder of the image columns (an image encoder of the registry)"),
    }

    def __init__(self, input_shape: tuple[int, ...], columns: Sequence[dict[str, Any]], vocabulary: Sequence[str],
                 dim: int = 64, fusion: str = "attention", depth: int = 2, heads: int = 4, dropout: float = 0.1,
                 num_features: int = 256, numbers: str = "periodic", text_encoder: str = "fasttext",
                 image_encoder: str = "conv4") -> None:
        super().__init__()
        if not columns:
            raise SelfmetaError("encoder 'fusion' needs at least one column")
        if fusion == "attention" and dim % heads:
            raise SelfmetaError(f"encoder 'fusion': dim={dim} is not a multiple of heads={heads}")
        self.layout = Layout(list(columns))
        self.fusion, self.dim = fusion, dim
        kinds = self.layout
        self.numbers, self.categories = kinds.of("number"), kinds.of("category")
        self.texts, self.images = kinds.of("text"), kinds.of("image")
        k = len(columns)
        if self.numbers:
            self.number_embed: nn.Module = (PeriodicNumbers(len(self.numbers), dim) if numbers == "periodic"
                                            else LinearNumbers(len(self.numbers), dim))
        if self.categories:
            cardinality = torch.tensor([columns[i]["cardinality"] for i in self.categories])
            self.register_buffer("category_offset", torch.cumsum(cardinality, 0) - cardinality, persistent=False)
            self.category_embed = nn.Embedding(int(cardinality.sum()), dim)
        if self.texts:
            length = columns[self.texts[0]]["size"]
            self.text_encoder = build_encoder(text_encoder, (length,), "text", {"vocabulary": list(vocabulary)})
            self.text_out = nn.Linear(self.text_encoder.num_features, dim)
            self.vocab_size = len(vocabulary)
        if self.images:
            side = columns[self.images[0]]["side"]
            self.image_encoder = build_encoder(image_encoder, (IMAGE_CHANNELS, side, side), "image")
            self.image_out = nn.Linear(self.image_encoder.num_features, dim)
        self.missing = nn.Parameter(torch.randn(k, dim) * 0.02)        # (K, dim) per-column "missing" tokens
        self.column_embed = nn.Parameter(torch.randn(k, dim) * 0.02)   # (K, dim)
        # Plan order of the kind-grouped tokens (numbers, categories, texts, images).
        grouped = self.numbers + self.categories + self.texts + self.images
        self.register_buffer("order", torch.argsort(torch.tensor(grouped)), persistent=False)
        if fusion == "attention":
            self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, activation="gelu", batch_first=True,
                                               norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)
            self.num_features = dim
        else:
            self.head = nn.Sequential(nn.LayerNorm(k * dim), nn.Linear(k * dim, num_features), nn.ReLU(inplace=True),
                                      nn.Dropout(dropout), nn.Linear(num_features, num_features))
            self.num_features = num_features

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.layout.kinds))

    def column_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) items -> (B, K, dim) column tokens in plan order, missing columns as their missing token."""
        b, layout, tokens = len(x), self.layout, []
        if self.numbers:
            v = x[:, layout.probe[self.numbers].to(x.device)]                       # (B, Kn)
            tokens.append(self.number_embed(torch.nan_to_num(v)))
        if self.categories:
            index = x[:, layout.probe[self.categories].to(x.device)].long()         # (B, Kc)
            tokens.append(self.category_embed(index + self.category_offset))
        if self.texts:
            ids = torch.stack([layout.segment(x, k) for k in self.texts], 1).long()  # (B, Kt, L)
            ids = ids.flatten(0, 1)
            ids[:, 0] = torch.where(ids[:, 0] == PAD, UNK, ids[:, 0])               # missing: no empty bag
            features = self.text_out(self.text_encoder.forward_features(ids))       # (B*Kt, dim)
            tokens.append(features.view(b, len(self.texts), self.dim))
        if self.images:
            side = self.layout.columns[self.images[0]]["side"]
            pixels = torch.stack([layout.segment(x, k) for k in self.images], 1)     # (B, Ki, 3*S*S)
            pixels = (torch.nan_to_num(pixels).view(-1, IMAGE_CHANNELS, side, side) - IMAGE_MEAN) / IMAGE_STD
            features = self.image_out(self.image_encoder.forward_features(pixels))
            tokens.append(features.view(b, len(self.images), self.dim))
        tokens_ = torch.cat(tokens, 1)[:, self.order]                                  # (B, K, dim)
        present = layout.present(x).unsqueeze(-1)                                      # (B, K, 1)
        return torch.where(present, tokens_, self.missing.to(tokens_.dtype))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.column_tokens(x) + self.column_embed                              # (B, K, dim)
        if self.fusion == "concat":
            return self.head(tokens.flatten(1))
        out = self.blocks(torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1))     # (B, 1+K, dim)
        return self.norm(out[:, 0])

    def forward_part(self, x: torch.Tensor, part: str) -> torch.Tensor:
        """(B, D) -> (B, k*dim): the column tokens of kind ``part`` before fusion, concatenated in plan order."""
        if part not in self.parts:
            raise SelfmetaError(f"no {part!r} part: the record's column kinds are {', '.join(self.parts)}")
        index = [k for k, kind in enumerate(self.layout.kinds) if kind == part]
        return self.column_tokens(x)[:, index].flatten(1)
