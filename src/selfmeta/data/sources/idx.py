"""MNIST-style IDX files (LeCun et al.), gzipped or not.

A folder holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]`` gives the train and test splits.
Format: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions, then each dimension as a
big-endian int32, then the data.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfmeta.data.dataset import Dataset
from selfmeta.data.source import MAX_RATIO, SOURCES, DataSource
from selfmeta.errors import SelfmetaError

PREFIX = {"train": "train", "test": "t10k"}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file into an array; a truncated, padded or malformed file raises SelfmetaError.

    The header's shape is checked against the file before the data is read: an uncompressed file must be
    exactly that size, and a gzipped one may not decompress to more than ``MAX_RATIO`` times its size (a
    small file cannot make the reader allocate gigabytes).
    """
    size = path.stat().st_size
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _DTYPES:
                raise SelfmetaError(f"{path}: not an IDX file (bad magic number)")
            ndim = magic[3]
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise SelfmetaError(f"{path}: truncated IDX header")
            shape = struct.unpack(f">{ndim}i", dims)
            dtype = np.dtype(_DTYPES[magic[2]])
            if any(n < 0 for n in shape):
                raise SelfmetaError(f"{path}: negative size in the IDX header {shape}")
            expected = math.prod(shape) * dtype.itemsize
            limit = size - 4 - 4 * ndim if path.suffix != ".gz" else MAX_RATIO * size
            if expected > limit:
                raise SelfmetaError(f"{path}: the header's shape {shape} needs {expected} bytes, more than the file "
                                    f"{'holds' if path.suffix != '.gz' else 'can decompress to'}; truncated or corrupt")
            raw = f.read(expected + 1)
    except (EOFError, OSError, zlib.error) as exc:
        raise SelfmetaError(f"{path}: corrupt or truncated file ({exc})") from None
    if len(raw) != expected:
        raise SelfmetaError(
            f"{path}: truncated or padded IDX file: shape {shape} needs {expected} bytes, found {len(raw)}"
            + ("" if len(raw) < expected else " or more")
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def as_images(x: np.ndarray, path: Path) -> torch.Tensor:
    """(N, H, W) IDX values -> (N, 1, H, W) images: uint8 as they are, other integers within 0..255 as
    uint8, floats within [0, 1] as float32; any other range is refused rather than wrapped or truncated."""
    if x.dtype == np.uint8:
        return torch.from_numpy(x.copy()).unsqueeze(1)
    if x.size == 0:
        return torch.from_numpy(x.astype(np.uint8)).unsqueeze(1)
    low, high = x.min(), x.max()
    if np.issubdtype(x.dtype, np.integer):
        if low < 0 or high > 255:
            raise SelfmetaError(f"{path}: pixel values from {low} to {high}; images take 0..255 (uint8) or floats in [0, 1]")
        return torch.from_numpy(x.astype(np.uint8)).unsqueeze(1)
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 1:
        raise SelfmetaError(f"{path}: pixel values from {low} to {high}; float images take values in [0, 1]")
    return torch.from_numpy(x.astype(np.float32)).unsqueeze(1)


@SOURCES.register("idx")
class IDX(DataSource):
    name = "idx"
    description = "MNIST-style IDX files (gzipped or not): a folder with the standard four files"

    def detect(self, path: Path) -> bool:
        return path.is_dir() and _find(path, "train-images-idx3-ubyte") is not None

    @staticmethod
    def _classes(path: Path) -> np.ndarray:
        """The label values of every label file in the folder (sorted), so train and test share class indices.
        Only values that occur are classes: a file with one label of 30,000,000 has one class, not 30 million."""
        files = [_find(path, f"{p}-labels-idx1-ubyte") for p in PREFIX.values()]
        values = [np.unique(read_idx(f)) for f in files if f is not None]
        return np.unique(np.concatenate(values)) if values else np.zeros(0, dtype=np.int64)

    def load(self, path: Path, split: str, **options: Any) -> Dataset:
        parts = ["train", "test"] if split == "all" else [split]
        xs, ys = [], []
        for part in parts:
            images = _find(path, f"{PREFIX[part]}-images-idx3-ubyte")
            labels = _find(path, f"{PREFIX[part]}-labels-idx1-ubyte")
            if images is None:
                raise SelfmetaError(f"{path}: no {PREFIX[part]}-images-idx3-ubyte[.gz] for the {part} split")
            x = read_idx(images)
            if x.ndim != 3:
                raise SelfmetaError(f"{images}: expected (N, H, W) images, got shape {x.shape}")
            xs.append(as_images(x, images))                                  # (N, 1, H, W)
            if labels is not None:
                y = read_idx(labels)
                if y.shape != (len(x),):
                    raise SelfmetaError(f"{labels}: {len(y)} labels for {len(x)} images")
                if not np.issubdtype(y.dtype, np.integer):
                    raise SelfmetaError(f"{labels}: labels must be integers, got {y.dtype}")
                ys.append(y.astype(np.int64))
        if len({x.dtype for x in xs}) > 1:
            raise SelfmetaError(f"{path}: the train and test images have different pixel types")
        y, classes = None, []
        if len(ys) == len(xs):
            values = self._classes(path)
            y = torch.from_numpy(np.searchsorted(values, np.concatenate(ys)))
            classes = [str(v) for v in values]
        return Dataset(torch.cat(xs), y, classes, "image", path.name)
