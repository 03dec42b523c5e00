"""MNIST-style IDX files (LeCun et al.), gzipped or not.

A folder holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]`` gives the train and test splits.
Format: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions, then each dimension as a
big-endian int32, then the data.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfmeta.data.dataset import Dataset
from selfmeta.data.source import SOURCES, DataSource
from selfmeta.errors import SelfmetaError

PREFIX = {"train": "train", "test": "t10k"}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file into an array; a truncated or malformed file raises SelfmetaError."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, OSError, zlib.error) as exc:
        raise SelfmetaError(f"{path}: corrupt or truncated gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise SelfmetaError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise SelfmetaError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise SelfmetaError(
            f"{path}: truncated or padded IDX file: shape {shape} needs {expected} bytes, found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


@SOURCES.register("idx")
class IDX(DataSource):
    name = "idx"
    description = "MNIST-style IDX files (gzipped or not): a folder with the standard four files"

    def detect(self, path: Path) -> bool:
        return path.is_dir() and _find(path, "train-images-idx3-ubyte") is not None

    @staticmethod
    def _num_classes(path: Path) -> int:
        """From every label file in the folder, so the train and test splits list the same classes."""
        files = [_find(path, f"{p}-labels-idx1-ubyte") for p in PREFIX.values()]
        return max(int(read_idx(f).max()) + 1 for f in files if f is not None)

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
            xs.append(torch.from_numpy(x.astype(np.uint8)).unsqueeze(1))  # (N, 1, H, W)
            if labels is not None:
                y = read_idx(labels)
                if y.shape != (len(x),):
                    raise SelfmetaError(f"{labels}: {len(y)} labels for {len(x)} images")
                ys.append(torch.from_numpy(y.astype(np.int64)))
        y = torch.cat(ys) if len(ys) == len(xs) else None
        classes = [str(c) for c in range(self._num_classes(path))] if y is not None else []
        return Dataset(torch.cat(xs), y, classes, "image", path.name)
