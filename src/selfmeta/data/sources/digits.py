"""scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): the embedded default, no files needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from selfmeta.data.dataset import Dataset, fixed_split
from selfmeta.data.source import SOURCES, DataSource


@SOURCES.register("digits")
class Digits(DataSource):
    name = "digits"
    description = "scikit-learn's bundled 8x8 grey digits (pass 'digits' as the path); fixed 80/20 split"

    def detect(self, path: Path) -> bool:
        return str(path) == "digits"

    def load(self, path: Path, split: str, **options: Any) -> Dataset:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        # Pixel values are 0..16; scale to 0..255 so digits look like any other 8-bit image.
        x = torch.from_numpy(bunch.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)  # (N, 1, 8, 8)
        y = torch.from_numpy(bunch.target).long()
        return fixed_split(Dataset(x, y, [str(c) for c in range(10)], "image", "digits"), split)
