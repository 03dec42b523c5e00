"""The CIFAR-10 / CIFAR-100 python format (Krizhevsky 2009): ``cifar-10-batches-py`` or ``cifar-100-python``.

These files are pickles. They are read with an unpickler that only rebuilds plain containers and numpy
arrays, so a malicious file cannot run code.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfmeta.data.dataset import Dataset
from selfmeta.data.source import SOURCES, DataSource
from selfmeta.errors import SelfmetaError

# (module, name) pairs a CIFAR batch may reference: numpy's array reconstruction and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}

_LAYOUTS = {
    # folder marker: (train files, test files, meta file, label key, names key)
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", b"labels", b"label_names"),
    "cifar100": (["train"], ["test"], "meta", b"fine_labels", b"fine_label_names"),
}


def _plain_dtype_state(state: Any) -> bool:
    """The ``__setstate__`` tuple of a plain (not structured, not sub-array) numpy dtype.

    numpy does not validate this tuple fully: some malformed ones crash the interpreter (segfault).
    """
    return (
        isinstance(state, tuple)
        and len(state) in (8, 9)
        and state[0] in (3, 4)
        and isinstance(state[1], (str, bytes))
        and state[2] is None and state[3] is None and state[4] is None
        and state[5:8] == (-1, -1, 0)  # elsize, alignment, flags of a built-in numeric type
        and (len(state) == 8 or state[8] is None or isinstance(state[8], dict))
    )


def _numeric_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(spec, bool(align), bool(copy))
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"refusing numpy dtype {dtype}")
    return dtype


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler, so that BUILD can be checked
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("numpy", "dtype"):
            return _numeric_dtype
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def _load_build(self) -> None:
        if isinstance(self.stack[-2], np.dtype) and not _plain_dtype_state(self.stack[-1]):
            raise pickle.UnpicklingError(f"malformed numpy dtype state {self.stack[-1]!r:.100}")
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = _load_build


def safe_unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, LookupError, MemoryError,
        OverflowError, struct.error,
    ) as exc:
        # LookupError covers IndexError, KeyError and the unknown encodings a corrupt byte can produce.
        raise SelfmetaError(f"{path}: not a valid CIFAR batch ({exc})") from None


def _layout(path: Path) -> str | None:
    if (path / "data_batch_1").is_file() or (path / "test_batch").is_file():
        return "cifar10"
    if (path / "train").is_file() and (path / "meta").is_file():
        return "cifar100"
    return None


@SOURCES.register("cifar")
class CIFAR(DataSource):
    name = "cifar"
    description = "CIFAR-10/100 python batches (cifar-10-batches-py, cifar-100-python), read without running code"

    def detect(self, path: Path) -> bool:
        return path.is_dir() and _layout(path) is not None

    def load(self, path: Path, split: str, **options: Any) -> Dataset:
        layout = _layout(path)
        if layout is None:
            raise SelfmetaError(f"{path}: not a CIFAR python folder (no data_batch_1, test_batch or train/meta)")
        train_files, test_files, meta_file, label_key, names_key = _LAYOUTS[layout]
        files = {"train": train_files, "test": test_files, "all": train_files + test_files}[split]
        xs, ys = [], []
        for name in files:
            if not (path / name).is_file():
                raise SelfmetaError(f"{path}: missing {name}")
            batch = safe_unpickle(path / name)
            try:
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                labels = np.asarray(batch[label_key], dtype=np.int64)
            except (KeyError, TypeError, ValueError) as exc:
                raise SelfmetaError(f"{path / name}: not a CIFAR batch (missing {exc})") from None
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
                raise SelfmetaError(f"{path / name}: expected (N, 3072) data and N labels, got {data.shape}")
            xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
            ys.append(torch.from_numpy(labels))
        y = torch.cat(ys)
        if (path / meta_file).is_file():
            meta = safe_unpickle(path / meta_file)
            names = meta.get(names_key) if isinstance(meta, dict) else None
            if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
                raise SelfmetaError(f"{path / meta_file}: not a CIFAR meta file (no list of class names under "
                                    f"{names_key.decode()})")
            classes = [n.decode(errors="replace") if isinstance(n, bytes) else n for n in names]
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
                raise SelfmetaError(f"{path}: labels from {int(y.min())} to {int(y.max())}, but "
                                    f"{meta_file} names {len(classes)} classes")
        else:  # the label values that occur are the classes (never range(max + 1): one huge label is one class)
            values, y = torch.unique(y, return_inverse=True)
            classes = [str(int(v)) for v in values]
        return Dataset(torch.cat(xs), y, classes, "image", path.name)
