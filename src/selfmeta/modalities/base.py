"""The modality contract and its registry: one kind of data (images, tables, series...), one module each.

A modality owns everything that depends on what an item is, so that the engine, the methods and the API
ask it instead of testing the modality's name:

- storage and validation: ``check(x)`` of the items tensor (number of dimensions, NaN policy). Items are
  one tensor ``(N, *item_shape)`` that the dataset serves by index (``Dataset.take``); missing values
  (and the padding of unequal lengths) are NaN where the modality allows them (``missing_values``);
- normalization: ``normalizer(x)`` fits a :class:`Normalize` on a sample (which axes are "channels");
- the view family (``views``, a :class:`Views`, with its options declared as every plug-in's);
- the default encoder, and whether the channels-last memory layout applies (``channels_last``);
- how a batch of raw items becomes model input on a device (``to_model``);
- where the source's items are not yet tensors (text documents), the :class:`Preprocessor` that turns
  them into the items tensor: fitted on the training split, saved with the run, reused by every later
  command (text: the tokenizer).

Example::

    modality = modality_of(data)                 # the Modality of a Dataset
    normalize = modality.normalizer(data.take(range(2000)))
    views = modality.build_views(data.input_shape, normalize, {"hflip": 0})
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from selfmeta.encoders.base import Normalize, Unnormalized, to_unit
from selfmeta.errors import SelfmetaError
from selfmeta.options import Option, Searched, check_options
from selfmeta.registry import Registry

# Constructor arguments of a view family that the engine supplies (the normalizer's statistics).
VIEW_ARGS = ("input_shape", "mean", "std")


class Views(nn.Module):
    """Contract: ``forward(x)`` returns one random view of the batch, same shape and dtype.

    Options are the constructor's keyword arguments after ``input_shape`` (and the statistics the engine
    passes), declared in ``options`` (:mod:`selfmeta.options`).
    """

    description: str = ""
    options: dict[str, Option] = {}
    inputs: tuple[str, ...] = ()  # constructor arguments the modality's preprocessor supplies (records: columns)

    @classmethod
    def search_space(cls, input_shape: tuple[int, ...]) -> dict[str, Searched]:
        """The options ``selfmeta tune`` searches, and where (none: the tuner leaves the views as they are)."""
        return {}

    @classmethod
    def data_defaults(cls, sample: torch.Tensor) -> tuple[dict[str, Any], str]:
        """Option values that suit the data better than the fixed defaults, where a rule is known, and the
        rule in words (what it looked at); the engine takes them for the options the user did not set and
        records them in the run's config. ``sample``: raw items of the training split, (N, *item_shape)."""
        return {}, ""


class Preprocessor:
    """Contract: raw items (an object array, ``Dataset.raw``) -> the items tensor, fitted on a training split
    and saved with the run as JSON, so that every later command prepares its data the same way.

    Built as ``cls(**options)`` (declared in ``options``, set as ``input.NAME=value``), then ``fit(raw)`` learns it;
    ``__call__(raw)`` gives ``(N, *item_shape)``; ``to_json``/``from_json`` save it (the weights file's
    description holds it, and the run directory a readable copy, ``file``); ``encoder_inputs`` are the
    constructor arguments every encoder of the modality takes from it (text: the vocabulary; records: the
    column plan and the vocabulary), which the views also read (``Views.inputs``).
    """

    kind: ClassVar[str]                      # for messages: "tokenizer"
    file: ClassVar[str]                      # its copy in a run directory: "tokenizer.json"
    options: ClassVar[dict[str, Option]] = {}

    def fit(self, raw: Any) -> "Preprocessor":
        """Learn from the raw items of a training split; returns self. A preprocessor that learns from what
        the source knows of the things items refer to (``Dataset.info``: item titles) also takes ``info=``."""
        raise NotImplementedError

    def __call__(self, raw: Any) -> torch.Tensor:
        raise NotImplementedError

    def to_json(self) -> str:
        raise NotImplementedError

    @classmethod
    def from_json(cls, text: str, where: str) -> "Preprocessor":
        """The preprocessor saved by ``to_json``; one SelfmetaError line naming ``where`` if it is not one."""
        raise NotImplementedError

    def encoder_inputs(self) -> dict[str, Any]:
        return {}


class Modality:
    """Contract of one kind of data; see the module docstring. Subclasses set the class attributes and
    override what differs: ``stat_dims`` (the axes normalization averages over), ``build_views`` when the
    views need statistics."""

    name: ClassVar[str]
    description: ClassVar[str]
    item_dims: ClassVar[int]             # dimensions of one item: 3 for (C, H, W), 1 for (D,), 2 for (C, T)
    item_layout: ClassVar[str]           # for messages: "(C, H, W)"
    default_encoder: ClassVar[str]
    views: ClassVar[type[Views]]
    channels_last: ClassVar[bool] = False   # the NHWC layout speeds up its convolutions on CPU
    missing_values: ClassVar[bool] = False  # NaN marks a missing value or padding, not an error
    preprocessor: ClassVar[type[Preprocessor] | None] = None  # raw items -> tensor, fitted per run (text)

    @property
    def stat_dims(self) -> tuple[int, ...]:
        """Axes of a batch ``(N, *item)`` that normalization averages over: all but axis 1 by default."""
        return (0, *range(2, self.item_dims + 1))

    def check(self, x: torch.Tensor, name: str) -> None:
        """One SelfmetaError line for items this modality cannot hold."""
        if x.ndim != self.item_dims + 1:
            raise SelfmetaError(f"{name}: {self.name} data must be (N, {self.item_layout[1:]}, got shape "
                                f"{tuple(x.shape)}")
        if x.is_floating_point() and not self.missing_values and not bool(torch.isfinite(x).all()):
            raise SelfmetaError(f"{name}: the data holds NaN or infinite values")
        if x.is_floating_point() and self.missing_values and bool(torch.isinf(x).any()):
            raise SelfmetaError(f"{name}: the data holds infinite values (NaN marks a missing one)")

    def fits(self, trained: tuple[int, ...], given: tuple[int, ...]) -> bool:
        """Whether a model trained on items of shape ``trained`` takes items of shape ``given``: the same
        shape, unless the modality says otherwise (series of any length)."""
        return tuple(trained) == tuple(given)

    def from_array(self, x: torch.Tensor) -> torch.Tensor:
        """An array of items from the Python API -> the stored layout: a left-out channel axis is added
        ((N, H, W) grey images, (N, T) univariate series), uint8 is kept (0..255), other numbers become float32."""
        if x.ndim == self.item_dims:
            x = x.unsqueeze(1)
        return x if x.dtype == torch.uint8 else x.float()

    def stat_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the normalizer's statistics for items of ``input_shape``."""
        shape = [1] * (len(input_shape) + 1)
        shape[1] = input_shape[0]
        return tuple(shape)

    def normalizer(self, sample: torch.Tensor) -> Normalize:
        """Mean and standard deviation per channel (feature) of a sample of raw items; where the modality
        has missing values, over the present ones only."""
        x = to_unit(sample)
        shape, dims = self.stat_shape(tuple(x.shape[1:])), self.stat_dims
        if not self.missing_values:
            return Normalize(x.mean(dims).view(shape), x.std(dims).view(shape))
        present = torch.isfinite(x)
        count = present.sum(dims).clamp_min(1)
        mean = torch.where(present, x, 0.0).sum(dims) / count
        var = torch.where(present, (x - mean.view(shape)) ** 2, 0.0).sum(dims) / (count - 1).clamp_min(1)
        return Normalize(mean.view(shape), var.sqrt().view(shape))

    def raw_items(self, X: Any, min_items: int = 1) -> np.ndarray:
        """What the Python API is given for a modality with a preprocessor -> its raw items, (N,) object array;
        one SelfmetaError line for anything else. By default documents: a sequence of str."""
        if isinstance(X, str) or not hasattr(X, "__len__"):
            raise SelfmetaError("X must be a list of documents (strings), got a single " + type(X).__name__)
        documents = list(X)
        if len(documents) < min_items:
            raise SelfmetaError(f"Found array with {len(documents)} sample(s) (shape=({len(documents)},)) while a "
                                f"minimum of {min_items} is required.")
        bad = next((i for i, d in enumerate(documents) if not isinstance(d, str)), None)
        if bad is not None:
            raise SelfmetaError(f"X holds documents (strings), but item {bad} is a {type(documents[bad]).__name__}")
        raw = np.empty(len(documents), dtype=object)
        raw[:] = documents
        return raw

    def documents(self, raw: Any) -> np.ndarray | None:
        """The texts whose words name clusters (topics) of these raw items; None where items have no words."""
        return None

    def placeholder_items(self, input_shape: tuple[int, ...]) -> torch.Tensor:
        """Two items of ``input_shape`` in the stored dtype: the template a saved model is rebuilt from."""
        return torch.zeros((2, *input_shape))

    def placeholder_normalizer(self, input_shape: tuple[int, ...]) -> Normalize:
        """Zero mean, unit spread, to be overwritten by saved statistics."""
        shape = self.stat_shape(input_shape)
        return Normalize(torch.zeros(shape), torch.ones(shape))

    def build_views(self, input_shape: tuple[int, ...], normalize: Normalize, options: dict[str, Any],
                    inputs: dict[str, Any] | None = None) -> Views:
        """The view family with checked options (the statistics are passed where the family takes them);
        ``inputs``: what the fitted preprocessor tells the views (``Views.inputs``: records, the column plan)."""
        checked = check_options(f"{self.name} views", self.views, options, (*VIEW_ARGS, *self.views.inputs))
        given = {n: (inputs or {})[n] for n in self.views.inputs}
        return self.views(input_shape, **given, **checked)

    def layout(self, channels_last: bool) -> torch.memory_format:
        return torch.channels_last if channels_last and self.channels_last else torch.contiguous_format

    def to_model(self, x: torch.Tensor, device: torch.device | str, channels_last: bool = False) -> torch.Tensor:
        """Raw items (a batch from ``Dataset.take``) -> model input on ``device``: floats (uint8 images to
        [0, 1]), in the memory layout the modality's convolutions like."""
        x = to_unit(x.to(device, non_blocking=True))
        return x.contiguous(memory_format=self.layout(channels_last))


class IdSequences(Modality):
    """Items that are sequences of ids from a fitted vocabulary, ``(N, L)`` int32 stored, left-aligned, 0 =
    padding, 1 = unknown (text: token ids; interactions: item ids). No normalization; the views take only
    their options; batches go to the device at full width (so that batches prepared apart can be joined),
    and the encoders cut the padding columns."""

    item_dims = 1
    item_layout = "(L,)"
    ids: ClassVar[str]   # for messages: "token ids"

    def check(self, x: torch.Tensor, name: str) -> None:
        super().check(x, name)
        if x.dtype not in (torch.int32, torch.int64):
            raise SelfmetaError(f"{name}: {self.name} items are {self.ids} (int32 or int64), got {x.dtype}")
        if len(x) and bool((x < 0).any()):
            raise SelfmetaError(f"{name}: {self.ids} must be >= 0")

    def normalizer(self, sample: torch.Tensor) -> Normalize:
        return Unnormalized()

    def placeholder_items(self, input_shape: tuple[int, ...]) -> torch.Tensor:
        return torch.full((2, *input_shape), 1, dtype=torch.int32)

    def placeholder_normalizer(self, input_shape: tuple[int, ...]) -> Normalize:
        return Unnormalized()

    def build_views(self, input_shape: tuple[int, ...], normalize: Normalize, options: dict[str, Any],
                    inputs: dict[str, Any] | None = None) -> Views:
        return self.views(input_shape, **check_options(f"{self.name} views", self.views, options, VIEW_ARGS))

    def to_model(self, x: torch.Tensor, device: torch.device | str, channels_last: bool = False) -> torch.Tensor:
        """(B, L) ids -> (B, L) int64 on ``device``, the full width."""
        return x.to(device, non_blocking=True).long()


MODALITIES: Registry[type[Modality]] = Registry("modality")


def get_modality(name: str) -> Modality:
    """The registered modality ``name`` (an unknown name is an error listing the valid ones)."""
    import selfmeta.modalities  # noqa: F401  (registers the built-in modalities)

    return MODALITIES.get(name)()
