"""Tables: ``(N, D)`` float32 rows of numeric features; per-feature normalization; an MLP by default.

Views (raw ``(B, D)`` rows): swap noise, feature masking and Gaussian noise, scaled by each feature's
spread, which the views take from the normalizer.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from selfmeta.encoders.base import Normalize
from selfmeta.modalities.base import MODALITIES, VIEW_ARGS, Modality, Views
from selfmeta.options import Option, Searched, check_options


class TableViews(Views):
    """Corruptions for rows of numeric features (swap noise as in Jahrer's DAE; masking as in VIME, Yoon et al. 2020)."""

    description = "swap noise, masking to the mean, Gaussian noise, scaled per feature"
    options = {
        "swap": Option("probability a value is replaced by the same feature of another row (swap noise)", ge=0, le=1),
        "mask": Option("probability a value is replaced by the feature's mean", ge=0, le=1),
        "noise": Option("Gaussian noise, in units of each feature's standard deviation", ge=0),
    }

    @classmethod
    def search_space(cls, input_shape: tuple[int, ...]) -> dict[str, Searched]:
        return {"swap": Searched(0.0, 0.5), "mask": Searched(0.0, 0.5), "noise": Searched(0.0, 0.5)}

    def __init__(self, input_shape: tuple[int, ...], mean: torch.Tensor, std: torch.Tensor, swap: float = 0.15,
                 mask: float = 0.2, noise: float = 0.1) -> None:
        super().__init__()
        self.o = SimpleNamespace(swap=swap, mask=mask, noise=noise)
        # Copies: the normalizer's statistics are the backbone's buffers, and a saved file holds each tensor once.
        self.register_buffer("mean", mean.detach().reshape(1, -1).float().clone())
        self.register_buffer("std", std.detach().reshape(1, -1).float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, d = x.shape
        if self.o.swap > 0:
            donor = torch.randint(n, (n, d), device=x.device)
            x = torch.where(torch.rand(n, d, device=x.device) < self.o.swap, x.gather(0, donor), x)
        if self.o.mask > 0:
            x = torch.where(torch.rand(n, d, device=x.device) < self.o.mask, self.mean, x)
        if self.o.noise > 0:
            x = x + self.o.noise * self.std * torch.randn_like(x)
        return x


@MODALITIES.register("table")
class Table(Modality):
    name = "table"
    description = "tables (N, D) of numeric features, float32; per-feature normalization"
    item_dims = 1
    item_layout = "(D,)"
    default_encoder = "mlp"
    views = TableViews

    def build_views(self, input_shape: tuple[int, ...], normalize: Normalize, options: dict[str, Any],
                    inputs: dict[str, Any] | None = None) -> Views:
        checked = check_options(f"{self.name} views", self.views, options, VIEW_ARGS)
        return self.views(input_shape, mean=normalize.mean, std=normalize.std, **checked)
