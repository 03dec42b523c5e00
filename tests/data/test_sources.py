"""Data sources through ``load_data``: one test per format, corrupt inputs included.

Every file is built in tmp_path, except the real-data tests at the end, which read ../shared/data and skip
with a reason where it is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import shared
from selfmeta.api import as_dataset
from selfmeta.data import Dataset, load_data
from selfmeta.data.download import RemoteFile, fetch
from selfmeta.errors import SelfmetaError


def items(ds: Dataset) -> Counter:
    """The multiset of (image bytes, label) pairs of a dataset."""
    labels = ds.y.tolist() if ds.y is not None else [None] * len(ds)
    return Counter((ds.x[i].numpy().tobytes(), labels[i]) for i in range(len(ds)))


# --------------------------------------------------------------------------------------------- digits


def test_digits_fixed_stratified_disjoint_split():
    train = load_data("digits", "train")
    test = load_data("digits", "test")
    full = load_data("digits", "all")
    assert len(full) == 1797
    assert len(train) + len(test) == 1797
    assert train.x.shape[1:] == (1, 8, 8) and train.x.dtype == torch.uint8
    assert int(full.x.max()) == 255 and int(full.x.min()) == 0
    assert train.classes == [str(c) for c in range(10)] == test.classes
    # Disjoint and complete: train and test together are exactly the items of "all".
    assert items(train) + items(test) == items(full)
    # Stratified: every class contributes 20% (rounded) of its items to the test split.
    counts_all = torch.bincount(full.y, minlength=10)
    counts_test = torch.bincount(test.y, minlength=10)
    for c in range(10):
        assert int(counts_test[c]) == int(round(int(counts_all[c]) * 0.2))
    # Fixed: a second load gives the very same split.
    again = load_data("digits", "train")
    assert torch.equal(again.x, train.x) and torch.equal(again.y, train.y)
    again_test = load_data("digits", "test")
    assert torch.equal(again_test.x, test.x) and torch.equal(again_test.y, test.y)


# ------------------------------------------------------------------------------------------------ IDX


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of uint8 data: 0x0000, type 0x08, ndim, big-endian dims, data."""
    assert array.dtype == np.uint8
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.tobytes()


def write_idx_folder(folder: Path, gz: bool, n_train: int = 7, n_test: int = 3, h: int = 5, w: int = 4):
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def test_idx_splits_list_the_same_classes(tmp_path):
    # Test labels are 0, 3, 6 only; train has 0..9: both splits must list the ten classes.
    write_idx_folder(tmp_path / "m", gz=False, n_train=10, n_test=3)
    train, test = load_data(tmp_path / "m", "train"), load_data(tmp_path / "m", "test")
    assert test.classes == train.classes == [str(c) for c in range(10)]


def test_idx_header_magic_numbers():
    data = idx_bytes(np.zeros((2, 3, 4), dtype=np.uint8))
    assert struct.unpack(">I", data[:4])[0] == 0x00000803
    assert struct.unpack(">I", idx_bytes(np.zeros(2, dtype=np.uint8))[:4])[0] == 0x00000801


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_folder(tmp_path, gz):
    arrays = write_idx_folder(tmp_path / "mnistlike", gz)
    train = load_data(tmp_path / "mnistlike", "train")  # format detected
    test = load_data(tmp_path / "mnistlike", "test", format="idx")
    full = load_data(tmp_path / "mnistlike", "all")
    assert train.x.shape == (7, 1, 5, 4) and train.x.dtype == torch.uint8
    assert test.x.shape == (3, 1, 5, 4)
    assert full.x.shape == (10, 1, 5, 4)
    assert train.modality == "image" and train.input_shape == (1, 5, 4)
    assert np.array_equal(train.x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(test.x[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert train.y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert test.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert train.y.dtype == torch.int64
    # "all" is train then test.
    assert torch.equal(full.x, torch.cat([train.x, test.x]))
    assert torch.equal(full.y, torch.cat([train.y, test.y]))


def test_idx_truncated_file(tmp_path):
    write_idx_folder(tmp_path / "d", gz=False)
    path = tmp_path / "d" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(SelfmetaError, match="truncated"):
        load_data(tmp_path / "d", "train")
    # A header cut short is caught too.
    path.write_bytes(path.read_bytes()[:9])
    with pytest.raises(SelfmetaError, match="truncated"):
        load_data(tmp_path / "d", "train")


def test_idx_truncated_gzip(tmp_path):
    write_idx_folder(tmp_path / "d", gz=True)
    path = tmp_path / "d" / "train-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SelfmetaError, match="gzip") as info:
        load_data(tmp_path / "d", "train")
    assert "train-images-idx3-ubyte.gz" in str(info.value)


def test_idx_bad_magic(tmp_path):
    write_idx_folder(tmp_path / "d", gz=False)
    path = tmp_path / "d" / "t10k-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[0:4] = b"\x12\x34\x56\x78"
    path.write_bytes(bytes(raw))
    load_data(tmp_path / "d", "train")  # the train split does not read the broken file
    with pytest.raises(SelfmetaError, match="magic"):
        load_data(tmp_path / "d", "test")
    # A wrong type code with zero leading bytes is a bad magic number too.
    raw[0:4] = b"\x00\x00\x07\x03"
    path.write_bytes(bytes(raw))
    with pytest.raises(SelfmetaError, match="magic"):
        load_data(tmp_path / "d", "all")


def test_idx_label_count_mismatch(tmp_path):
    write_idx_folder(tmp_path / "d", gz=False)
    (tmp_path / "d" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(SelfmetaError, match="4 labels for 7 images"):
        load_data(tmp_path / "d", "train")


# -------------------------------------------------------------------------------------- image folders


def write_image(path: Path, array: np.ndarray, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if array.ndim == 2 else "RGB"
    Image.fromarray(array, mode).save(path, format=fmt)


def grey_folder(root: Path, classes=("a", "b"), per_class: int = 10, size=(6, 5)) -> dict[int, str]:
    """root/<class>/<i>.png, each image constant with a unique value; returns value -> class."""
    owner = {}
    value = 10
    for c in classes:
        for i in range(per_class):
            write_image(root / c / f"{i:02d}.png", np.full(size, value, dtype=np.uint8))
            owner[value] = c
            value += 3
    return owner


def values_of(ds: Dataset) -> list[int]:
    return [int(v) for v in ds.x.flatten(1)[:, 0]]


def test_image_folder_fixed_split(tmp_path):
    owner = grey_folder(tmp_path / "imgs")
    train = load_data(tmp_path / "imgs", "train")
    test = load_data(tmp_path / "imgs", "test")
    full = load_data(tmp_path / "imgs", "all")
    assert full.x.shape == (20, 1, 6, 5) and full.x.dtype == torch.uint8
    assert train.x.shape == (16, 1, 6, 5) and test.x.shape == (4, 1, 6, 5)
    assert train.classes == test.classes == ["a", "b"]
    # Every image is constant, so each item shows which file it came from.
    assert all(bool((img == img.flatten()[0]).all()) for img in full.x)
    assert set(values_of(train)).isdisjoint(values_of(test))
    assert sorted(values_of(train) + values_of(test)) == sorted(owner)
    for ds in (train, test, full):
        assert [ds.classes[i] for i in ds.y.tolist()] == [owner[v] for v in values_of(ds)]
    assert torch.bincount(test.y).tolist() == [2, 2]  # stratified
    again = load_data(tmp_path / "imgs", "test")
    assert torch.equal(again.x, test.x)


def make_split_folder(root: Path, fmt: str = "PNG") -> None:
    ext = "png" if fmt == "PNG" else "jpg"
    colours = {"cat": (200, 30, 30), "dog": (30, 200, 30), "fox": (30, 30, 200)}
    for split, n in (("train", 3), ("test", 2)):
        for c, rgb in colours.items():
            if split == "test" and c == "dog":
                continue  # the test split lacks a class
            for i in range(n):
                write_image(root / split / c / f"{i}.{ext}", np.full((8, 8, 3), rgb, dtype=np.uint8), fmt)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_folder_train_test_dirs(tmp_path, fmt):
    make_split_folder(tmp_path / "pets", fmt)
    train = load_data(tmp_path / "pets", "train")
    test = load_data(tmp_path / "pets", "test")
    full = load_data(tmp_path / "pets", "all")
    assert train.x.shape == (9, 3, 8, 8) and train.x.dtype == torch.uint8
    assert test.x.shape == (4, 3, 8, 8)
    assert len(full) == 13
    # Class indices agree between splits even though the test split has no dog.
    assert train.classes == test.classes == full.classes == ["cat", "dog", "fox"]
    assert sorted(set(test.y.tolist())) == [0, 2]
    assert torch.bincount(train.y).tolist() == [3, 3, 3]
    # The pixels of each item match its class's colour (JPEG within a small error).
    expected = {0: (200, 30, 30), 1: (30, 200, 30), 2: (30, 30, 200)}
    tol = 0 if fmt == "PNG" else 8
    for ds in (train, test):
        for img, label in zip(ds.x, ds.y.tolist()):
            mean = img.float().mean(dim=(1, 2))
            assert torch.allclose(mean, torch.tensor(expected[label], dtype=torch.float32), atol=tol + 0.5)


def test_image_folder_grey_and_rgb_channels(tmp_path):
    for i in range(5):
        write_image(tmp_path / "grey" / "x" / f"{i}.png", np.full((4, 4), i * 20, dtype=np.uint8))
        write_image(tmp_path / "rgb" / "x" / f"{i}.png", np.full((4, 4, 3), i * 20, dtype=np.uint8))
    assert load_data(tmp_path / "grey", "all").x.shape == (5, 1, 4, 4)
    assert load_data(tmp_path / "rgb", "all").x.shape == (5, 3, 4, 4)


def zip_folder(folder: Path, target: Path, top: str | None = None) -> Path:
    with zipfile.ZipFile(target, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                name = f.relative_to(folder).as_posix()
                z.write(f, f"{top}/{name}" if top else name)
    return target


@pytest.mark.parametrize("top", [None, "extra"], ids=["flat", "extra-top-folder"])
def test_image_zip_with_splits(tmp_path, top):
    make_split_folder(tmp_path / "pets")
    archive = zip_folder(tmp_path / "pets", tmp_path / "pets.zip", top)
    for split in ("train", "test", "all"):
        from_zip = load_data(archive, split)
        from_dir = load_data(tmp_path / "pets", split)
        assert torch.equal(from_zip.x, from_dir.x)
        assert torch.equal(from_zip.y, from_dir.y)
        assert from_zip.classes == ["cat", "dog", "fox"]
    assert load_data(archive, "test").x.shape == (4, 3, 8, 8)


@pytest.mark.parametrize("top", [None, "extra"], ids=["flat", "extra-top-folder"])
def test_image_zip_without_splits(tmp_path, top):
    owner = grey_folder(tmp_path / "imgs")
    archive = zip_folder(tmp_path / "imgs", tmp_path / "imgs.zip", top)
    train = load_data(archive, "train", format="imagefolder")
    test = load_data(archive, "test")
    assert (len(train), len(test)) == (16, 4)
    assert train.classes == ["a", "b"]
    assert sorted(values_of(train) + values_of(test)) == sorted(owner)
    assert torch.equal(test.x, load_data(tmp_path / "imgs", "test").x)


def test_image_folder_with_only_a_train_dir(tmp_path):
    """train/<class>/<image> alone is a split layout (not a class called "train"): no test items."""
    for c in ("a", "b"):
        for i in range(3):
            write_image(tmp_path / "d" / "train" / c / f"{i}.png", np.full((4, 4), i, dtype=np.uint8))
    train = load_data(tmp_path / "d", "train")
    assert len(train) == 6 and train.classes == ["a", "b"]
    with pytest.raises(SelfmetaError, match="the test split holds no images"):
        load_data(tmp_path / "d", "test")


def test_image_sizes_differ(tmp_path):
    write_image(tmp_path / "d" / "a" / "1.png", np.zeros((4, 4), dtype=np.uint8))
    write_image(tmp_path / "d" / "a" / "2.png", np.zeros((4, 4), dtype=np.uint8))
    write_image(tmp_path / "d" / "b" / "odd.png", np.zeros((6, 5), dtype=np.uint8))
    with pytest.raises(SelfmetaError, match="different sizes") as info:
        load_data(tmp_path / "d", "all")
    message = str(info.value)
    assert "a/1.png" in message and "b/odd.png" in message
    assert "4x4" in message and "5x6" in message


def test_corrupt_image_names_the_file(tmp_path):
    grey_folder(tmp_path / "d", per_class=3)
    (tmp_path / "d" / "b" / "broken.png").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(SelfmetaError, match="corrupt or unreadable image") as info:
        load_data(tmp_path / "d", "all")
    assert "b/broken.png" in str(info.value)


def test_truncated_png_names_the_file(tmp_path):
    grey_folder(tmp_path / "d", per_class=3)
    big = np.random.default_rng(0).integers(0, 256, (6, 5), dtype=np.uint8)
    write_image(tmp_path / "d" / "a" / "cut.png", big)
    path = tmp_path / "d" / "a" / "cut.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(SelfmetaError, match="cut.png"):
        load_data(tmp_path / "d", "all")


def test_truncated_zip(tmp_path):
    make_split_folder(tmp_path / "pets")
    archive = zip_folder(tmp_path / "pets", tmp_path / "pets.zip")
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SelfmetaError, match="zip") as info:
        load_data(archive, "train")
    assert "pets.zip" in str(info.value)


def test_empty_image_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SelfmetaError, match="no images"):
        load_data(tmp_path / "empty", "train")


def test_image_folder_bad_layout(tmp_path):
    grey_folder(tmp_path / "d", per_class=2)
    write_image(tmp_path / "d" / "loose.png", np.zeros((6, 5), dtype=np.uint8))
    with pytest.raises(SelfmetaError, match="loose.png"):
        load_data(tmp_path / "d", "all")


# ------------------------------------------------------------------------------------- CIFAR pickles

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar(folder: Path, per_batch: int = 3, n_test: int = 4) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
        }
        dump(batch, folder / name)
        batches[name] = batch
    dump({b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}, folder / "batches.meta")
    return batches


def test_cifar_python_batches(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    train = load_data(tmp_path / "cifar-10-batches-py", "train")
    test = load_data(tmp_path / "cifar-10-batches-py", "test")
    full = load_data(tmp_path / "cifar-10-batches-py", "all", format="cifar")
    assert train.x.shape == (15, 3, 32, 32) and train.x.dtype == torch.uint8
    assert test.x.shape == (4, 3, 32, 32) and len(full) == 19
    assert train.classes == test.classes == CIFAR_NAMES
    # Layout: a data row is 1024 red, 1024 green, 1024 blue values, each row-major.
    rows = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    for i in range(len(rows)):
        assert np.array_equal(train.x[i].numpy(), rows[i].reshape(3, 32, 32))
    assert train.x[0, 1, 0, 0] == rows[0][1024] and train.x[0, 0, 0, 1] == rows[0][1]
    assert train.y.tolist() == labels
    assert test.y.tolist() == batches["test_batch"][b"labels"]
    assert np.array_equal(test.x.flatten(1).numpy(), batches["test_batch"][b"data"])


def test_cifar_without_meta_uses_numbers(tmp_path):
    batches = write_cifar(tmp_path / "c")
    (tmp_path / "c" / "batches.meta").unlink()
    ds = load_data(tmp_path / "c", "all")
    raw = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)] + [batches["test_batch"][b"labels"]])
    assert ds.classes == [str(v) for v in np.unique(raw)]           # the label values that occur, in order
    assert [ds.classes[i] for i in ds.y.tolist()] == [str(v) for v in raw]


class Exploit:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("victim", ["data_batch_1", "batches.meta"])
def test_cifar_pickle_cannot_run_code(tmp_path, victim):
    write_cifar(tmp_path / "c")
    marker = tmp_path / "hacked"
    payload = {b"data": Exploit(f"echo hacked > {marker}"), b"labels": [0], b"label_names": Exploit(f"touch {marker}")}
    dump(payload, tmp_path / "c" / victim)
    with pytest.raises(SelfmetaError) as info:
        load_data(tmp_path / "c", "train")
    assert victim in str(info.value)
    assert "system" in str(info.value)  # names the forbidden global
    assert not marker.exists()


def test_cifar_truncated_and_malformed(tmp_path):
    write_cifar(tmp_path / "c")
    path = tmp_path / "c" / "test_batch"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SelfmetaError, match="test_batch"):
        load_data(tmp_path / "c", "test")
    dump({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, path)
    with pytest.raises(SelfmetaError, match="3072"):
        load_data(tmp_path / "c", "test")
    dump({b"labels": [0, 1]}, path)
    with pytest.raises(SelfmetaError, match="test_batch"):
        load_data(tmp_path / "c", "test")
    dump([1, 2, 3], path)
    with pytest.raises(SelfmetaError, match="test_batch"):
        load_data(tmp_path / "c", "test")


def test_cifar_corrupt_byte(tmp_path):
    """One flipped byte in the name of the codec that rebuilds the array's bytes."""
    write_cifar(tmp_path / "c")
    path = tmp_path / "c" / "test_batch"
    raw = path.read_bytes()
    assert b"latin1" in raw
    path.write_bytes(raw.replace(b"latin1", b"latxn1", 1))
    with pytest.raises(SelfmetaError, match="not a valid CIFAR batch"):
        load_data(tmp_path / "c", "test")


def py2_cifar_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR batch as Python 2's cPickle (protocol 2) wrote the official files: str objects as
    SHORT_BINSTRING/BINSTRING opcodes (bytes when read with encoding="bytes"), numpy.core module names."""

    def s(b: bytes) -> bytes:
        return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)

    def i(v: int) -> bytes:
        if 0 <= v < 256:
            return b"K" + bytes([v])
        return b"M" + struct.pack("<H", v) if 0 <= v < 65536 else b"J" + struct.pack("<i", v)

    n, d = data.shape
    out = b"\x80\x02}(" + s(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b") + b"\x87R"
    out += b"(" + i(1) + i(n) + i(d) + b"\x86"
    out += b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
    out += b"(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb"
    out += b"\x89" + s(data.tobytes()) + b"tb"
    out += s(b"labels") + b"](" + b"".join(i(v) for v in labels) + b"eu."
    return out


def test_cifar_python2_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    batches = write_cifar(folder)
    for name, batch in batches.items():
        (folder / name).write_bytes(py2_cifar_pickle(batch[b"data"], batch[b"labels"]))
    full = load_data(folder, "all")
    rows = np.concatenate([batches[n][b"data"] for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]])
    assert np.array_equal(full.x.flatten(1).numpy(), rows)
    assert full.x.shape == (19, 3, 32, 32) and full.classes == CIFAR_NAMES


class DtypeState:
    """Pickles as numpy.dtype(spec) followed by BUILD with the given __setstate__ tuple."""

    def __init__(self, spec, state):
        self.spec, self.state = spec, state

    def __reduce__(self):
        return (np.dtype, (self.spec, False, True), self.state)


BAD_DTYPES = {
    "short-state": ("u1", (3, "|", None, -1, -1, 0), "malformed numpy dtype state"),  # segfaults numpy 2.4
    "object-flags": ("u1", (3, "|", None, None, None, -1, -1, 63), "malformed numpy dtype state"),
    "object-dtype": ("O", (3, "|", None, None, None, -1, -1, 63), "refusing numpy dtype object"),
}


def test_cifar_malformed_dtype_does_not_crash(tmp_path):
    """numpy does not validate a dtype's pickled state: the reader must, or a corrupt file kills Python.
    Loaded in a child process so that a crash fails this test instead of ending the test session."""
    for case, (spec, state, _) in BAD_DTYPES.items():
        write_cifar(tmp_path / case)
        dump({b"data": DtypeState(spec, state), b"labels": [0]}, tmp_path / case / "test_batch")
    code = (
        "import sys\n"
        "from selfmeta.data import load_data\n"
        "from selfmeta.errors import SelfmetaError\n"
        "for folder in sys.argv[1:]:\n"
        "    try:\n"
        "        load_data(folder, 'test')\n"
        "    except SelfmetaError as exc:\n"
        "        print(exc, flush=True)\n"
    )
    folders = [str(tmp_path / case) for case in BAD_DTYPES]
    proc = subprocess.run([sys.executable, "-c", code, *folders], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"crashed with status {proc.returncode}: {proc.stderr[-500:]}"
    lines = proc.stdout.splitlines()
    assert len(lines) == len(BAD_DTYPES), proc.stdout
    for line, (case, (_, _, message)) in zip(lines, BAD_DTYPES.items()):
        assert f"{case}/test_batch" in line and message in line


def test_cifar_malformed_meta(tmp_path):
    write_cifar(tmp_path / "c")
    dump([b"airplane"], tmp_path / "c" / "batches.meta")  # a list, not a dict
    with pytest.raises(SelfmetaError, match="batches.meta"):
        load_data(tmp_path / "c", "train")


def test_cifar_missing_batch(tmp_path):
    write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").unlink()
    assert len(load_data(tmp_path / "c", "test")) == 4
    with pytest.raises(SelfmetaError, match="missing data_batch_3"):
        load_data(tmp_path / "c", "train")


# --------------------------------------------------------------------------------------- CSV / Parquet


def labelled_frame(n: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "f1": rng.normal(size=n),
            "f2": rng.integers(0, 100, n),
            "f3": rng.normal(size=n).astype(np.float32),
            "label": np.where(np.arange(n) % 2 == 0, "dog", "cat"),
        }
    )


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


@pytest.fixture(params=["csv", "parquet"])
def ext(request):
    return request.param


def test_table_with_labels(tmp_path, ext):
    frame = labelled_frame()
    path = write_table(frame, tmp_path / f"t.{ext}")
    full = load_data(path, "all")
    train = load_data(path, "train")
    test = load_data(path, "test", format=ext)
    assert full.modality == "table" and full.x.dtype == torch.float32
    assert full.x.shape == (20, 3) and full.input_shape == (3,)
    assert np.allclose(full.x.numpy(), frame[["f1", "f2", "f3"]].to_numpy(dtype=np.float64), atol=1e-6)
    assert full.classes == ["cat", "dog"]
    assert [full.classes[i] for i in full.y.tolist()] == frame["label"].tolist()
    assert (len(train), len(test)) == (16, 4)
    assert torch.bincount(test.y).tolist() == [2, 2]
    assert items(train) + items(test) == items(full)


def test_table_label_column_option(tmp_path, ext):
    frame = labelled_frame().rename(columns={"label": "y"})
    path = write_table(frame, tmp_path / f"t.{ext}")
    ds = load_data(path, "all", label_column="y")
    assert ds.x.shape == (20, 3)
    assert [ds.classes[i] for i in ds.y.tolist()] == frame["y"].tolist()
    # Without the option, "y" is just a feature column: a category of an unlabelled record table.
    records = load_data(path, "all")
    assert records.modality == "record" and records.y is None and ("y", "category") in records.raw.plan


def test_table_without_labels(tmp_path, ext):
    frame = labelled_frame().drop(columns="label")
    path = write_table(frame, tmp_path / f"t.{ext}")
    full = load_data(path, "all")
    train = load_data(path, "train")
    test = load_data(path, "test")
    assert full.y is None and train.y is None and full.classes == []
    assert full.x.shape == (20, 3)
    assert (len(train), len(test)) == (16, 4)
    assert items(train) + items(test) == items(full)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_table_non_finite(tmp_path, ext, bad):
    frame = labelled_frame()
    frame["f1"] = frame["f1"].astype(float)
    frame.loc[3, "f1"] = bad
    path = write_table(frame, tmp_path / f"t.{ext}")
    with pytest.raises(SelfmetaError, match="NaN or infinite"):
        load_data(path, "train")


def test_table_non_numeric_feature(tmp_path, ext):
    frame = labelled_frame()
    frame["colour"] = ["red", "blue"] * 10
    path = write_table(frame, tmp_path / f"t.{ext}")
    records = load_data(path, "train")  # a category column makes the table a record table, not an error
    assert records.modality == "record" and ("colour", "category") in records.raw.plan
    assert records.raw.plan[:3] == [("f1", "number"), ("f2", "number"), ("f3", "number")]


def test_table_nullable_and_bool_columns(tmp_path):
    frame = labelled_frame()
    frame["f2"] = frame["f2"].astype("Int64")  # pandas' nullable integers, kept as such by Parquet
    ds = load_data(write_table(frame, tmp_path / "ok.parquet"), "all")
    assert ds.x[:, 1].tolist() == frame["f2"].astype(float).tolist()
    frame.loc[5, "f2"] = pd.NA
    with pytest.raises(SelfmetaError, match="NaN or infinite"):
        load_data(write_table(frame, tmp_path / "na.parquet"), "all")
    frame = labelled_frame()
    frame["flag"] = np.arange(20) % 3 == 0
    records = load_data(write_table(frame, tmp_path / "bool.parquet"), "all")
    assert records.modality == "record" and ("flag", "category") in records.raw.plan


def test_table_missing_label_column(tmp_path, ext):
    path = write_table(labelled_frame(), tmp_path / f"t.{ext}")
    with pytest.raises(SelfmetaError, match="no label column 'churn'") as info:
        load_data(path, "train", label_column="churn")
    assert "f1" in str(info.value)  # lists the columns there are


def test_table_missing_labels_values(tmp_path, ext):
    frame = labelled_frame()
    frame["label"] = frame["label"].astype(object)
    frame.loc[2, "label"] = None
    path = write_table(frame, tmp_path / f"t.{ext}")
    with pytest.raises(SelfmetaError, match="missing values"):
        load_data(path, "train")


def test_table_empty(tmp_path, ext):
    path = write_table(labelled_frame().iloc[:0], tmp_path / f"t.{ext}")
    with pytest.raises(SelfmetaError, match="no rows"):
        load_data(path, "train")
    only_labels = write_table(labelled_frame()[["label"]], tmp_path / f"l.{ext}")
    with pytest.raises(SelfmetaError, match="no feature columns"):
        load_data(only_labels, "train")


def test_table_unreadable(tmp_path, ext):
    path = tmp_path / f"t.{ext}"
    path.write_bytes(b"" if ext == "csv" else b"PAR1 this is not parquet")
    with pytest.raises(SelfmetaError, match=f"cannot read as {ext}"):
        load_data(path, "train")


# ------------------------------------------------------------------------------------- paths, formats


def test_missing_path(tmp_path):
    with pytest.raises(SelfmetaError, match="no such file or folder"):
        load_data(tmp_path / "nowhere", "train")
    with pytest.raises(SelfmetaError, match="no such file or folder"):
        load_data(tmp_path / "nowhere.csv", "train", format="csv")


def test_unknown_format(tmp_path):
    path = write_table(labelled_frame(), tmp_path / "t.csv")
    with pytest.raises(SelfmetaError, match="unknown data format 'xml'") as info:
        load_data(path, "train", format="xml")
    for name in ("cifar", "csv", "digits", "idx", "imagefolder", "parquet"):
        assert name in str(info.value)


def test_undetectable_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(SelfmetaError, match="cannot tell the data format") as info:
        load_data(path, "train")
    assert "csv" in str(info.value)


def test_unknown_split(tmp_path):
    with pytest.raises(SelfmetaError, match="unknown split 'validation'") as info:
        load_data("digits", "validation")
    assert "train, val, test, all" in str(info.value)


# ---------------------------------------------------------------------------------------- as_dataset


def test_as_dataset_table():
    x = np.random.default_rng(0).normal(size=(12, 5))
    ds = as_dataset(x, None, y=np.array(["b", "a"] * 6))
    assert ds.modality == "table" and ds.x.shape == (12, 5) and ds.x.dtype == torch.float32
    assert np.allclose(ds.x.numpy(), x, atol=1e-6)
    assert ds.classes == ["a", "b"] and ds.y.tolist() == [1, 0] * 6
    assert as_dataset(x, None).y is None


def test_as_dataset_images():
    x = np.random.default_rng(0).integers(0, 256, (6, 7, 9), dtype=np.uint8)
    ds = as_dataset(x, None)
    assert ds.modality == "image" and ds.x.shape == (6, 1, 7, 9) and ds.x.dtype == torch.uint8
    assert np.array_equal(ds.x[:, 0].numpy(), x)
    four = as_dataset(torch.rand(3, 3, 4, 4), None)
    assert four.modality == "image" and four.input_shape == (3, 4, 4)


def test_as_dataset_input_shape():
    flat = np.arange(4 * 64, dtype=np.float32).reshape(4, 64) / 255
    ds = as_dataset(flat, (1, 8, 8))
    assert ds.modality == "image" and ds.x.shape == (4, 1, 8, 8)
    assert torch.equal(ds.x.reshape(4, 64), torch.from_numpy(flat))
    with pytest.raises(SelfmetaError, match="input_shape"):
        as_dataset(flat, (3, 8, 8))


def test_as_dataset_rejects_bad_input():
    x = np.ones((5, 3))
    x[2, 1] = np.nan
    with pytest.raises(SelfmetaError, match="NaN"):
        as_dataset(x, None)
    x[2, 1] = np.inf
    with pytest.raises(SelfmetaError, match="infinity"):
        as_dataset(x, None)
    with pytest.raises(SelfmetaError, match=r"0 sample\(s\)"):
        as_dataset(np.zeros((0, 4)), None)
    with pytest.raises(SelfmetaError, match="Expected 2D array, got 1D array"):
        as_dataset([], None)
    with pytest.raises(SelfmetaError, match="shape"):
        as_dataset(np.zeros((2, 3, 4, 5, 6)), None)
    with pytest.raises(SelfmetaError, match="dtype='numeric' is not compatible with arrays of bytes/strings"):
        as_dataset(np.array([["a", "b"], ["c", "d"]]), None)
    with pytest.raises(SelfmetaError, match="Complex data not supported"):
        as_dataset(np.ones((3, 2), dtype=complex), None)
    with pytest.raises(TypeError, match="Sparse data was passed"):
        import scipy.sparse

        as_dataset(scipy.sparse.csr_matrix(np.eye(3)), None)


# ---------------------------------------------------------------------------------------- downloads


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_fetch_verifies_md5(tmp_path):
    payload = os.urandom(5000)
    source = tmp_path / "server" / "blob.bin"
    source.parent.mkdir()
    source.write_bytes(payload)
    cache = tmp_path / "cache"
    target = fetch(RemoteFile(source.as_uri(), md5(payload)), cache)
    assert target == cache / "blob.bin"
    assert target.read_bytes() == payload
    assert not (cache / "blob.bin.part").exists()
    # A verified copy is not downloaded again: it survives the source disappearing.
    source.unlink()
    assert fetch(RemoteFile(source.as_uri(), md5(payload)), cache).read_bytes() == payload


def test_fetch_wrong_md5_leaves_nothing(tmp_path):
    source = tmp_path / "server" / "blob.bin"
    source.parent.mkdir()
    source.write_bytes(b"some bytes")
    cache = tmp_path / "cache"
    with pytest.raises(SelfmetaError, match="checksum mismatch"):
        fetch(RemoteFile(source.as_uri(), "0" * 32), cache)
    assert not (cache / "blob.bin").exists()
    assert not (cache / "blob.bin.part").exists()
    assert list(cache.iterdir()) == []


def test_fetch_unreachable(tmp_path):
    with pytest.raises(SelfmetaError, match="cannot download"):
        fetch(RemoteFile((tmp_path / "absent.bin").as_uri(), "0" * 32), tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


# ---------------------------------------------------------------------------------------- real data


@pytest.mark.shared_data
def test_real_mnist():
    folder = shared("mnist")
    train = load_data(folder, "train")
    test = load_data(folder, "test")
    assert train.x.shape == (60000, 1, 28, 28) and train.x.dtype == torch.uint8
    assert test.x.shape == (10000, 1, 28, 28)
    assert sorted(set(train.y.tolist())) == list(range(10)) == sorted(set(test.y.tolist()))
    assert train.classes == [str(c) for c in range(10)]
    assert int(train.x.max()) == 255 and int(train.x.min()) == 0


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_cifar10_jpg_test_split():
    archive = shared("cifar10-jpg/cifar10-jpg.zip")
    test = load_data(archive, "test")
    assert test.x.shape == (10000, 3, 32, 32) and test.x.dtype == torch.uint8
    assert test.classes == sorted(CIFAR_NAMES)
    assert torch.bincount(test.y, minlength=10).tolist() == [1000] * 10
