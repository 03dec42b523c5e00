"""Time series: ``(N, C, T)`` float32, univariate (C = 1) or multivariate; NaN marks a missing value and the
padding of a series shorter than the longest (JapaneseVowels: lengths 7 to 29, padded at the end).

Normalization is per channel over the present values. Encoders see NaN too and handle it (the TS2Vec
encoder zeroes missing steps after its input projection, the 1-D ResNet pools over the present ones).

Views (``(B, C, T)``, raw values, batched on the device; Iwana & Uchida 2021 survey the family, TS-TCC and
TS2Vec use them): window slicing (a random sub-series stretched back to T) and time warping (a smooth
random distortion of the time axis) fused into one resampling, then scaling and magnitude warping (a
smooth random gain per channel), jitter (Gaussian noise in units of each channel's spread) and timestamp
masking (random steps marked missing). Every draw is a batched tensor op. The default strengths are
the moderate ones of the survey and of TS-TCC (series are z-normalized first), not tuned here;
``benchmarks/series_view_pilot.py`` compares settings by cross-validation on UCR training splits.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from selfmeta.encoders.base import Normalize
from selfmeta.errors import SelfmetaError
from selfmeta.modalities.base import MODALITIES, VIEW_ARGS, Modality, Views
from selfmeta.options import Option, Searched, check_options


def smooth_curves(n: int, channels: int, length: int, knots: int, std: float, like: torch.Tensor) -> torch.Tensor:
    """(n, channels, length) smooth random curves around 0: ``knots`` N(0, std^2) values per curve, joined by
    cubic interpolation (the magnitude- and time-warping curves of Um et al. 2017, batched)."""
    values = torch.randn(n, channels, 1, knots, device=like.device, dtype=like.dtype) * std
    return F.interpolate(values, size=(1, length), mode="bicubic", align_corners=True)[:, :, 0]


def series_lengths(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> (B,) int64: steps up to the last one with a value in any channel (the padding of a
    shorter series is NaN at its end)."""
    present = torch.isfinite(x).any(1)                                                           # (B, T)
    steps = torch.arange(1, x.shape[-1] + 1, device=x.device)
    return (present * steps).amax(1).clamp_min(1)


def slice_warp_positions(lengths: torch.Tensor, length: int, scale: tuple[float, float], warp: float,
                         like: torch.Tensor, knots: int = 4) -> torch.Tensor:
    """Where each output step of a view samples its series: (n, T) positions in [-1, 1] over the padded
    length T (``grid_sample`` coordinates, corners aligned).

    Item i keeps its own length L_i: output step t < L_i reads fraction ``start + width * w(t / (L_i - 1))``
    of the series' first L_i steps, where the window ``width ~ U(scale)`` starts at ``U(0, 1 - width)`` and
    w is a smooth monotone map of [0, 1] onto itself (the time warp: cumulative exp of a smooth curve of
    std ``warp``; the identity when 0). Steps past L_i stay padding (the caller marks them missing).
    """
    n = len(lengths)
    width = torch.empty(n, 1, device=like.device, dtype=like.dtype).uniform_(*scale)            # (n, 1)
    start = torch.rand(n, 1, device=like.device, dtype=like.dtype) * (1 - width)
    span = (lengths.to(like.dtype) - 1).clamp_min(1).unsqueeze(1)                                # (n, 1)
    steps = torch.arange(length, device=like.device, dtype=like.dtype).expand(n, length)
    fraction = (steps / span).clamp(0, 1)                                                        # (n, T)
    if warp > 0:
        speed = torch.exp(smooth_curves(n, 1, length, knots, warp, like)[:, 0])                 # (n, T)
        curve = torch.cumsum(speed, dim=1) - speed[:, :1]
        curve = curve / curve[:, -1:]                                                            # w on a grid of T
        index = fraction * (length - 1)
        low = index.floor().long().clamp_max(length - 2) if length > 1 else index.long()
        high = (low + 1).clamp_max(length - 1)
        weight = index - low
        fraction = torch.lerp(curve.gather(1, low), curve.gather(1, high), weight)
    source = (start + width * fraction) * span                                                  # in steps
    return 2 * source / max(length - 1, 1) - 1


class SeriesViews(Views):
    """Window slicing, time and magnitude warping, scaling, jitter and timestamp masking, batched."""

    description = "window slicing, time warping, scaling, magnitude warping, jitter, timestamp masking"
    options = {
        "crop": Option("fraction of the series a view's window covers, (low, high); stretched back to full length",
                       gt=0, le=1, ordered=True),
        "time_warp": Option("std of the smooth time distortion (log speed); 0 turns it off", ge=0),
        "scaling": Option("std of a random gain per item and channel, around 1", ge=0),
        "magnitude_warp": Option("std of a smooth random gain along time, around 1", ge=0),
        "jitter": Option("std of Gaussian noise, in units of each channel's spread", ge=0),
        "mask": Option("probability that a time step is marked missing (timestamp masking)", ge=0, lt=1),
    }

    @classmethod
    def search_space(cls, input_shape: tuple[int, ...]) -> dict[str, Searched]:
        return {"crop": Searched(0.2, 1.0, pair_high=1.0), "time_warp": Searched(0.0, 0.4),
                "scaling": Searched(0.0, 0.3), "magnitude_warp": Searched(0.0, 0.3), "jitter": Searched(0.0, 0.3),
                "mask": Searched(0.0, 0.3)}

    def __init__(self, input_shape: tuple[int, ...], std: torch.Tensor, crop: tuple[float, float] = (0.5, 1.0),
                 time_warp: float = 0.2, scaling: float = 0.1, magnitude_warp: float = 0.1, jitter: float = 0.1,
                 mask: float = 0.0) -> None:
        super().__init__()
        self.o = SimpleNamespace(crop=tuple(crop), time_warp=time_warp, scaling=scaling,
                                 magnitude_warp=magnitude_warp, jitter=jitter, mask=mask)
        self.channels, self.length = input_shape
        # A copy: the normalizer's statistics are the backbone's buffers, and a saved file holds each tensor once.
        self.register_buffer("std", std.detach().reshape(1, -1, 1).float().clone())              # (1, C, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t = x.shape
        o = self.o
        if o.crop != (1.0, 1.0) or o.time_warp > 0:
            lengths = series_lengths(x)                                                          # (n,)
            position = slice_warp_positions(lengths, t, o.crop, o.time_warp, x)                 # (n, T)
            grid = torch.stack([position, torch.zeros_like(position)], dim=-1).unsqueeze(1)      # (n, 1, T, 2)
            x = F.grid_sample(x.unsqueeze(2), grid, mode="bilinear", padding_mode="border",
                              align_corners=True).squeeze(2)                                     # (n, C, T)
            padding = torch.arange(t, device=x.device) >= lengths.unsqueeze(1)                   # (n, T)
            x = x.masked_fill(padding.unsqueeze(1), float("nan"))
        gain = 1.0
        if o.scaling > 0:
            gain = gain + o.scaling * torch.randn(n, c, 1, device=x.device, dtype=x.dtype)
        if o.magnitude_warp > 0:
            gain = gain + smooth_curves(n, c, t, 4, o.magnitude_warp, x)
        x = x * gain
        if o.jitter > 0:
            x = x + o.jitter * self.std.to(x.dtype) * torch.randn_like(x)
        if o.mask > 0:
            x = x.masked_fill(torch.rand(n, 1, t, device=x.device) < o.mask, float("nan"))
        return x


@MODALITIES.register("series")
class Series(Modality):
    name = "series"
    description = "time series (N, C, T), float32; NaN marks missing values and the padding of shorter series"
    item_dims = 2
    item_layout = "(C, T)"
    default_encoder = "ts2vec"
    views = SeriesViews
    missing_values = True

    def build_views(self, input_shape: tuple[int, ...], normalize: Normalize, options: dict[str, Any],
                    inputs: dict[str, Any] | None = None) -> Views:
        checked = check_options(f"{self.name} views", self.views, options, VIEW_ARGS)
        return self.views(input_shape, std=normalize.std, **checked)

    def check(self, x: torch.Tensor, name: str) -> None:
        super().check(x, name)
        if not x.is_floating_point():
            raise SelfmetaError(f"{name}: series values must be floats (NaN marks a missing one), got {x.dtype}")
        present = torch.isfinite(x).flatten(1).any(1)
        if not bool(present.all()):
            raise SelfmetaError(f"{name}: item {int((~present).nonzero()[0])} has no value at all (every step missing)")

    def fits(self, trained: tuple[int, ...], given: tuple[int, ...]) -> bool:
        return trained[0] == given[0]  # the encoders take any length: the channels must match

    def from_array(self, x: torch.Tensor) -> torch.Tensor:
        return super().from_array(x).float()  # series are float32 whatever the array held
