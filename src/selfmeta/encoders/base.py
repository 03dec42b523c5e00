"""The encoder contract, its registry, and the Backbone that pairs input normalization with an encoder.

Every encoder (timm's habit):
- is built as ``Encoder(input_shape, **inputs, **options)`` with ``input_shape`` = ``(C, H, W)``, ``(D,)``,
  ``(C, T)`` or ``(L,)`` from the data, ``inputs`` what the modality's fitted preprocessor tells every
  encoder of that modality (text: ``vocabulary``, the token strings by id), and its options declared in
  ``options`` (:mod:`selfmeta.options`);
- has ``num_features``, the size of ``forward_features(x)`` = ``(B, num_features)``;
- may have ``parts`` (records: the column kinds), each embedded apart by ``forward_part(x, part)``.
Text encoders also have ``vocab_size`` (the ids they embed), which heads that predict tokens read.
Methods never reach inside an encoder: they put their projection heads on top of ``forward_features``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from selfmeta.errors import SelfmetaError
from selfmeta.options import Option, check_options
from selfmeta.registry import Registry


class Encoder(nn.Module):
    modalities: ClassVar[tuple[str, ...]] = ()  # the modalities whose items it takes
    inputs: ClassVar[tuple[str, ...]] = ()      # constructor arguments the modality's preprocessor supplies
    description: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *input_shape) normalized inputs -> (B, num_features)."""
        raise NotImplementedError

    @property
    def parts(self) -> tuple[str, ...]:
        """Names of the parts whose own embedding ``forward_part`` gives (records: the column kinds)."""
        return ()

    def forward_part(self, x: torch.Tensor, part: str) -> torch.Tensor:
        """(B, *input_shape) -> (B, f): the embedding of one part of the item, before it is fused."""
        raise SelfmetaError(f"encoder {type(self).__name__} has no parts to embed apart (it has one input)")


ENCODERS: Registry[type[Encoder]] = Registry("encoder")


def build_encoder(name: str, input_shape: tuple[int, ...], modality: str, inputs: dict[str, Any] | None = None,
                  **options: Any) -> Encoder:
    """Encoder ``name`` for items of ``input_shape`` of ``modality``, with checked options; ``inputs``: the
    constructor arguments the modality's preprocessor supplies (``Preprocessor.encoder_inputs``)."""
    import selfmeta.encoders  # noqa: F401  (registers the built-in encoders)

    cls = ENCODERS.get(name)
    if modality not in cls.modalities:
        valid = [n for n in ENCODERS.names() if modality in ENCODERS.get(n).modalities]
        raise SelfmetaError(f"encoder {name!r} does not take {modality} data; use one of: {', '.join(valid)}")
    inputs = inputs or {}
    missing = [n for n in cls.inputs if n not in inputs]
    if missing:
        raise SelfmetaError(f"encoder {name!r} needs {', '.join(missing)} from the {modality} preprocessor")
    checked = check_options(f"encoder {name!r}", cls, options, ("input_shape", *cls.inputs))
    return cls(tuple(input_shape), **{n: inputs[n] for n in cls.inputs}, **checked)


class Normalize(nn.Module):
    """Standardization with statistics of the training data (per channel or per feature: the modality's
    ``normalizer`` fits them). NaN (a missing value, where the modality allows it) stays NaN.

    Kept as buffers so that a saved model embeds new data exactly as it saw the training data.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float().clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Unnormalized(Normalize):
    """Items the encoder standardizes itself, or that are not numbers (token ids; records, whose preprocessor
    scales each number column): the identity, with no statistics."""

    def __init__(self) -> None:
        nn.Module.__init__(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; float data unchanged (as float32)."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


class Backbone(nn.Module):
    """normalize -> encoder. Takes ``to_unit`` inputs (images in [0, 1], raw table rows)."""

    def __init__(self, normalize: Normalize, encoder: Encoder) -> None:
        super().__init__()
        self.normalize = normalize
        self.encoder = encoder

    @property
    def num_features(self) -> int:
        return self.encoder.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_features(self.normalize(x))

    def part(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """The embedding of part ``name`` of the items (``Encoder.forward_part``)."""
        return self.encoder.forward_part(self.normalize(x), name)
