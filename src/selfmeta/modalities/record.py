"""Records: rows whose columns have kinds (number, category, text, image), as ``(N, D)`` float32 items.

The source gives a :class:`~selfmeta.data.records.RecordTable` as ``Dataset.raw``; the :class:`ColumnPlan`
(the modality's preprocessor) is fitted on the training split, saved with the run (``columns.json``, and in
the weights' description) and packs every record into one row of ``D`` floats, one segment per column:

- ``number``: 1 value, scaled by the column's quantiles on the training split to a uniform spread of unit
  variance (``(F(v) - 0.5) * sqrt(12)``, F the empirical CDF, interpolated; ties averaged as scikit-learn's
  ``QuantileTransformer`` does), so heavy tails (counts, prices) do not dominate; NaN where missing;
- ``category``: 1 value, the category's index: 0 = missing, 1 = unknown (a category never seen in training,
  or rarer than ``input.min_count``), 2.. = the vocabulary, most frequent first;
- ``text``: ``max_length`` token ids of one tokenizer shared by every text column (:class:`Tokenizer`), 0 =
  padding; a missing text is all padding (an empty but present text is one ``[UNK]``);
- ``image``: ``3 * image_size**2`` pixel values in [0, 1] (RGB, resized), NaN everywhere where missing.

Ids and pixel values are exact in float32. One tensor keeps the items' contract (``Dataset.take`` by index,
one batch tensor to the device); the layout (``columns``, offsets and sizes) goes to the encoder and the
views through ``encoder_inputs``. A missing value is normal for records: the encoder sees an indicator (a
learned "missing" token per column), never an error. The run remembers its plan: data whose columns or kinds
differ is refused at evaluation.

Views (:class:`RecordViews`) corrupt each column in its own way, batched: swap noise and Gaussian noise for
numbers, swap noise for categories, the text views for text, the image views for images, and column dropout
(a present column hidden, at least one kept per record).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from selfmeta.data.records import ZIP_MEMBER, RecordTable
from selfmeta.encoders.base import Normalize, Unnormalized
from selfmeta.encoders.record import IMAGE_CHANNELS, Layout
from selfmeta.errors import SelfmetaError
from selfmeta.modalities.base import MODALITIES, Modality, Preprocessor, Views
from selfmeta.modalities.text import PAD, TextViews, Tokenizer
from selfmeta.options import Option, check_options

QUANTILES = 101                   # points of a number column's saved empirical CDF
MAX_IMAGE_PIXELS = 2**26          # a larger image (a decompression bomb) is refused before it is decoded
MAX_PLAN_JSON = 96 * 2**20        # a saved plan (tokenizer and category vocabularies included) larger is refused


def quantile_scale(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """(N,) float64 -> (N,) float32 of unit variance: the empirical CDF through ``quantiles`` (Q,) of the
    training values, as ``(F - 0.5) * sqrt(12)``; ties averaged from both sides, the range's ends (and values
    beyond them) at F = 0 and 1, as scikit-learn's ``QuantileTransformer``; NaN stays NaN."""
    references = np.linspace(0, 1, len(quantiles))
    forward = np.interp(values, quantiles, references)
    backward = -np.interp(-values, -quantiles[::-1], -references[::-1])
    cdf = np.where(values <= quantiles[0], 0.0, np.where(values >= quantiles[-1], 1.0, 0.5 * (forward + backward)))
    return ((cdf - 0.5) * math.sqrt(12)).astype(np.float32)


def load_images(locations: np.ndarray, size: int) -> np.ndarray:
    """(N,) image locations (a path, or ``zip::member``; None where missing) -> (N, 3, size, size) float32 in
    [0, 1], NaN where missing. Each zip is opened once."""
    from PIL import Image

    out = np.full((len(locations), IMAGE_CHANNELS, size, size), np.nan, dtype=np.float32)
    archives: dict[str, zipfile.ZipFile] = {}
    try:
        for i, location in enumerate(locations):
            if location is None:
                continue
            try:
                if ZIP_MEMBER in location:
                    archive, member = location.split(ZIP_MEMBER, 1)
                    if archive not in archives:
                        archives[archive] = zipfile.ZipFile(archive)
                    handle: Any = io.BytesIO(archives[archive].read(member))
                else:
                    handle = location
                with Image.open(handle) as image:
                    if image.width * image.height > MAX_IMAGE_PIXELS:
                        raise SelfmetaError(f"{location}: an image of {image.width}x{image.height} pixels is "
                                            f"larger than {MAX_IMAGE_PIXELS} pixels")
                    image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale where it can
                    pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))
            except SelfmetaError:
                raise
            except Exception as exc:  # Pillow's errors, OSError, zipfile's, a decompression bomb
                raise SelfmetaError(f"{location}: cannot read the image ({type(exc).__name__}: {exc})"
                                    .splitlines()[0]) from None
            out[i] = pixels.transpose(2, 0, 1) / 255.0
    finally:
        for archive in archives.values():
            archive.close()
    return out


class ColumnPlan(Preprocessor):
    """The column plan of a record table, fitted on its training split: each column's kind and segment, the
    number columns' quantiles, the category vocabularies and the text columns' shared tokenizer."""

    kind = "column plan"
    file = "columns.json"
    options = {
        **Tokenizer.options,
        "image_size": Option("side in pixels image columns are resized to", ge=1, le=512),
        "min_count": Option("times a category must occur in training to get its own embedding; rarer ones "
                            "share the unknown one", ge=1),
        "max_categories": Option("most categories kept per column (the most frequent)", ge=1),
    }

    def __init__(self, model: str = "wordpiece", vocab_size: int = 8000, lowercase: bool = True,
                 max_length: int = 128, min_frequency: int = 2, image_size: int = 32, min_count: int = 1,
                 max_categories: int = 10_000) -> None:
        self.tokenizer_options = {"model": model, "vocab_size": vocab_size, "lowercase": lowercase,
                                  "max_length": max_length, "min_frequency": min_frequency}
        self.image_size, self.min_count, self.max_categories = image_size, min_count, max_categories
        self.plan: list[tuple[str, str]] = []
        self.quantiles: dict[str, np.ndarray] = {}
        self.categories: dict[str, list[str]] = {}
        self.tokenizer: Tokenizer | None = None

    def options_json(self) -> dict[str, Any]:
        return {**self.tokenizer_options, "image_size": self.image_size, "min_count": self.min_count,
                "max_categories": self.max_categories}

    def fit(self, raw: RecordTable) -> "ColumnPlan":
        self.plan = raw.plan
        texts = []
        for name, kind in self.plan:
            values, present = raw.columns[name], ~raw.missing(name)
            if kind == "number":
                kept = values[present].astype(np.float64)
                self.quantiles[name] = (np.quantile(kept, np.linspace(0, 1, QUANTILES)) if len(kept)
                                        else np.zeros(QUANTILES))
            elif kind == "category":
                names, counts = np.unique(values[present].astype(str), return_counts=True)
                order = np.lexsort((names, -counts))       # most frequent first, ties by name: deterministic
                kept = [str(names[i]) for i in order if counts[i] >= self.min_count]
                self.categories[name] = kept[: self.max_categories]
            elif kind == "text":
                texts.extend(str(v) for v in values[present])
        if any(kind == "text" for _, kind in self.plan):
            corpus = np.empty(max(len(texts), 1), dtype=object)
            corpus[:] = texts or [""]
            self.tokenizer = Tokenizer(**self.tokenizer_options).fit(corpus)
        return self

    # The layout: one segment per column, in plan order.
    def size(self, kind: str) -> int:
        return {"number": 1, "category": 1, "text": self.tokenizer_options["max_length"],
                "image": IMAGE_CHANNELS * self.image_size**2}[kind]

    @property
    def columns(self) -> list[dict[str, Any]]:
        """Each column's name, kind, ``offset`` and ``size`` in an item, and ``cardinality`` (categories:
        the vocabulary plus missing and unknown; text: the tokenizer's vocabulary; image: the side)."""
        out, offset = [], 0
        for name, kind in self.plan:
            size = self.size(kind)
            column = {"name": name, "kind": kind, "offset": offset, "size": size}
            if kind == "category":
                column["cardinality"] = len(self.categories[name]) + 2
            if kind == "image":
                column["side"] = self.image_size
            out.append(column)
            offset += size
        return out

    def __call__(self, raw: RecordTable) -> torch.Tensor:
        """(N,) records -> (N, D) float32 items (module docstring)."""
        if raw.plan != self.plan:
            theirs = ", ".join(f"{n}:{k}" for n, k in raw.plan)
            ours = ", ".join(f"{n}:{k}" for n, k in self.plan)
            raise SelfmetaError(f"the data's columns ({theirs}) are not the run's column plan ({ours}); "
                                "give the same --columns as at training")
        columns = self.columns
        out = np.zeros((len(raw), columns[-1]["offset"] + columns[-1]["size"]), dtype=np.float32)
        for column in columns:
            name, kind, at = column["name"], column["kind"], slice(column["offset"], column["offset"] + column["size"])
            values, missing = raw.columns[name], raw.missing(name)
            if kind == "number":
                out[:, at] = quantile_scale(values.astype(np.float64), self.quantiles[name])[:, None]
            elif kind == "category":
                lookup = {c: i + 2 for i, c in enumerate(self.categories[name])}
                index = np.array([0 if m else lookup.get(str(v), 1) for v, m in zip(values, missing)])
                out[:, at] = index[:, None]
            elif kind == "text":
                documents = np.array(["" if m else str(v) for v, m in zip(values, missing)], dtype=object)
                ids = self.tokenizer(documents).numpy().astype(np.float32)
                ids[missing] = PAD
                out[:, at] = ids
            else:
                out[:, at] = load_images(values, self.image_size).reshape(len(raw), -1)
        return torch.from_numpy(out)

    def encoder_inputs(self) -> dict[str, Any]:
        return {"columns": self.columns,
                "vocabulary": self.tokenizer.vocabulary if self.tokenizer is not None else []}

    def to_json(self) -> str:
        return json.dumps({
            "selfmeta_columns": self.options_json(),
            "plan": [list(p) for p in self.plan],
            "quantiles": {n: q.tolist() for n, q in self.quantiles.items()},
            "categories": self.categories,
            "tokenizer": None if self.tokenizer is None else self.tokenizer.to_json(),
        })

    @classmethod
    def from_json(cls, text: str, where: str) -> "ColumnPlan":
        if len(text) > MAX_PLAN_JSON:
            raise SelfmetaError(f"{where}: the saved column plan is larger than {MAX_PLAN_JSON >> 20} MiB")
        try:
            saved = json.loads(text)
            plan = cls(**check_options(f"{where}: the saved column plan", cls, saved["selfmeta_columns"]))
            plan.plan = [(str(n), str(k)) for n, k in saved["plan"]]
            RecordTable({n: np.zeros(0) for n, _ in plan.plan}, dict(plan.plan))  # checks the kinds
            plan.quantiles = {str(n): np.asarray(q, dtype=np.float64) for n, q in saved["quantiles"].items()}
            plan.categories = {str(n): [str(c) for c in v] for n, v in saved["categories"].items()}
            if saved["tokenizer"] is not None:
                plan.tokenizer = Tokenizer.from_json(saved["tokenizer"], where)
        except SelfmetaError:
            raise
        except Exception as exc:  # json, KeyError, TypeError, ValueError
            raise SelfmetaError(f"{where}: not a selfmeta column plan ({type(exc).__name__}: {exc})"
                                .splitlines()[0]) from None
        for name, kind in plan.plan:
            table = {"number": plan.quantiles, "category": plan.categories}.get(kind)
            if (table is not None and name not in table) or (kind == "text" and plan.tokenizer is None):
                raise SelfmetaError(f"{where}: not a selfmeta column plan (nothing saved for column {name!r})")
            if kind == "number" and plan.quantiles[name].shape != (QUANTILES,):
                raise SelfmetaError(f"{where}: not a selfmeta column plan (quantiles of {name!r})")
        return plan


class RecordViews(Views):
    """Per-column corruptions of records, batched (module docstring)."""

    description = ("swap and Gaussian noise for numbers, swap noise for categories, the text and image views, "
                   "column dropout")
    inputs = ("columns",)
    options = {
        "swap": Option("probability a number or category value is replaced by the same column of another "
                       "record (swap noise)", ge=0, le=1),
        "noise": Option("Gaussian noise added to numbers, in units of their (unit) spread", ge=0),
        "drop": Option("probability a present column is hidden (at least one is kept per record)", ge=0, lt=1),
        "text": Option("apply the text views (the text modality's defaults) to text columns"),
        "image": Option("apply the image views (the image modality's defaults, no blur) to image columns"),
    }

    def __init__(self, input_shape: tuple[int, ...], columns: list[dict[str, Any]], swap: float = 0.2,
                 noise: float = 0.1, drop: float = 0.2, text: bool = True, image: bool = True) -> None:
        super().__init__()
        self.o = SimpleNamespace(swap=swap, noise=noise, drop=drop)
        self.layout = Layout(columns)
        self.scalars = self.layout.of("number") + self.layout.of("category")
        self.numbers = self.layout.of("number")
        self.text_views = TextViews((columns[self.layout.of("text")[0]]["size"],)) if text and self.layout.of(
            "text") else None
        self.image_views = None
        if image and self.layout.of("image"):
            from selfmeta.modalities.image import ImageViews

            side = columns[self.layout.of("image")[0]]["side"]
            self.image_views = ImageViews((IMAGE_CHANNELS, side, side), blur=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, device, layout = len(x), x.device, self.layout
        x = x.clone()
        if self.o.swap > 0 and self.scalars:
            at = layout.probe[self.scalars].to(device)                                 # (S,) positions
            donor = torch.randint(b, (b, len(at)), device=device)
            given = x[:, at].gather(0, donor)                                          # (B, S) donors' values
            # Only a donor's present value is taken: swap noise never makes a value missing.
            donor_present = layout.present(x)[:, self.scalars].gather(0, donor)
            swap = (torch.rand(b, len(at), device=device) < self.o.swap) & donor_present
            x[:, at] = torch.where(swap, given, x[:, at])
        if self.o.noise > 0 and self.numbers:
            at = layout.probe[self.numbers].to(device)
            x[:, at] = x[:, at] + self.o.noise * torch.randn(b, len(at), device=device)
        if self.text_views is not None:
            for k in layout.of("text"):
                c = layout.columns[k]
                at = slice(c["offset"], c["offset"] + c["size"])
                x[:, at] = self.text_views(x[:, at].long()).to(x.dtype)
        if self.image_views is not None:
            for k in layout.of("image"):
                c = layout.columns[k]
                at = slice(c["offset"], c["offset"] + c["size"])
                images = x[:, at].reshape(b, IMAGE_CHANNELS, c["side"], c["side"])
                missing = ~torch.isfinite(images[:, 0, 0, 0])
                viewed = self.image_views(torch.nan_to_num(images)).reshape(b, -1)
                x[:, at] = torch.where(missing.unsqueeze(1), math.nan, viewed)
        if self.o.drop > 0:
            present = layout.present(x)                                                # (B, K)
            hidden = (torch.rand(b, len(layout.columns), device=device) < self.o.drop) & present
            keep_one = present & ~hidden
            # A record left with no column keeps its first present one.
            first = torch.zeros_like(present).scatter_(1, present.float().argmax(1, keepdim=True), True) & present
            hidden &= ~(first & ~keep_one.any(1, keepdim=True))
            x = layout.hide(x, hidden)
        return x


@MODALITIES.register("record")
class Record(Modality):
    name = "record"
    description = ("records: number, category, text and image columns packed as (N, D) float32 by the run's "
                   "column plan; missing values allowed")
    item_dims = 1
    item_layout = "(D,)"
    default_encoder = "fusion"
    views = RecordViews
    missing_values = True
    preprocessor = ColumnPlan

    def check(self, x: torch.Tensor, name: str) -> None:
        super().check(x, name)
        if x.dtype != torch.float32:
            raise SelfmetaError(f"{name}: record items are float32 rows made by the column plan, got {x.dtype}")

    def from_array(self, x: torch.Tensor) -> torch.Tensor:
        raise SelfmetaError("records come as a table (a pandas DataFrame or a file), not as an array of numbers")

    def normalizer(self, sample: torch.Tensor) -> Normalize:
        return Unnormalized()  # the column plan scales the numbers; ids and pixels are not standardized

    def placeholder_normalizer(self, input_shape: tuple[int, ...]) -> Normalize:
        return Unnormalized()

    def documents(self, raw: Any) -> np.ndarray | None:
        """Each record's text columns joined by a newline; None where the plan has no text column."""
        texts = [n for n, k in raw.plan if k == "text"]
        if not texts:
            return None
        out = np.empty(len(raw), dtype=object)
        out[:] = ["\n".join(str(v) for v in row if v is not None) for row in zip(*(raw.columns[n] for n in texts))]
        return out

