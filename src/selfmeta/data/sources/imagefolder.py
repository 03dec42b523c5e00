"""Image folders ``root/<class>/<image>``, with optional ``train/`` and ``test/`` subfolders, on disk or in a .zip.

PNG, JPEG, BMP, GIF and WebP are decoded with Pillow, in threads (Pillow releases the GIL while decoding).
Every image must have the same size. A folder of grey images stays one channel; if any image has colour,
every image becomes RGB. A folder without ``train/`` and ``test/`` gets the fixed stratified 80/20 split.

Nothing in a file can make the reader use unbounded memory: a zip member is read only if its declared
size is at most ``MAX_MEMBER`` bytes and ``MAX_RATIO`` times its compressed size (zipfile never inflates past
the declared size, and checks each member's CRC as it reads it), and Pillow's decompression-bomb limit
(about 179 million pixels) refuses giant images. Member names that are absolute or climb out with ``..``
are refused.
"""

from __future__ import annotations

import io
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from selfmeta.data.dataset import Dataset, fixed_split, labels_from_names
from selfmeta.data.source import MAX_RATIO, SOURCES, DataSource
from selfmeta.errors import SelfmetaError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
SPLIT_DIRS = ("train", "test")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


MAX_MEMBER = 256 * 2**20  # bytes of one image file inside a zip


class _Colour(Exception):
    """A colour image among grey ones: decode everything again as RGB."""


def open_image(name: str, data: bytes) -> Image.Image:
    """A decoded Pillow image, or SelfmetaError for a corrupt file or a decompression bomb."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except Image.DecompressionBombError as exc:
        raise SelfmetaError(f"{name}: image too large to decode safely ({exc})".splitlines()[0]) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SelfmetaError(f"{name}: corrupt or unreadable image ({exc})".splitlines()[0]) from None


def _decode(name: str, data: bytes, mode: str | None) -> np.ndarray:
    """One image -> (H, W, C) uint8 in ``mode``; None takes its own (grey "L" or "RGB")."""
    with open_image(name, data) as image:
        grey = image.mode in _GREY_MODES
        if mode == "L" and not grey:
            raise _Colour
        array = np.asarray(image.convert(mode or ("L" if grey else "RGB")), dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array  # (H, W, C)


def decode_images(names: list[str], read: Callable[[str], bytes]) -> torch.Tensor:
    """Decode images of one size into a (N, C, H, W) uint8 tensor; mixed sizes raise SelfmetaError.

    One channel when every image is grey, RGB (grey images repeated into three channels) as soon as one
    has colour, whatever order the files come in.
    """
    first = _decode(names[0], read(names[0]), None)
    try:
        return _decode_all(names, read, "L" if first.shape[2] == 1 else "RGB", first.shape)
    except _Colour:
        return _decode_all(names, read, "RGB", (*first.shape[:2], 3))


def _decode_all(names: list[str], read: Callable[[str], bytes], mode: str, shape: tuple[int, ...]) -> torch.Tensor:
    out = np.empty((len(names), *shape), dtype=np.uint8)

    def fill(i: int) -> None:
        array = _decode(names[i], read(names[i]), mode)
        if array.shape != shape:
            raise SelfmetaError(
                f"images of different sizes: {names[0]} is {shape[1]}x{shape[0]}, "
                f"{names[i]} is {array.shape[1]}x{array.shape[0]}; resize them to one size first"
            )
        out[i] = array

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(fill, range(len(names))))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class _Tree:
    """The image files below a folder or inside a zip, as posix paths relative to the root."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            self.files = sorted(
                p.relative_to(path).as_posix() for p in path.rglob("*") if p.suffix.lower() in EXTENSIONS
            )
            self._zip = None
        else:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise SelfmetaError(f"{path}: corrupt or truncated zip file ({exc})") from None
            self.files = sorted(
                n for n in self._zip.namelist() if PurePosixPath(n).suffix.lower() in EXTENSIONS
            )
            for name in self.files:
                parts = PurePosixPath(name).parts
                if name.startswith("/") or "\\" in name or ".." in parts or (parts and ":" in parts[0]):
                    raise SelfmetaError(f"{path}: unsafe member name {name!r} (absolute, or climbing out with ..)")

    def read(self, name: str) -> bytes:
        """The bytes of one image file; a zip member is checked against the size limits first."""
        try:
            if self._zip is None:
                return (self.path / name).read_bytes()
            info = self._zip.getinfo(name)
            limit = min(MAX_MEMBER, MAX_RATIO * max(info.compress_size, 1))
            if info.file_size > limit:
                raise SelfmetaError(f"{self.path}: member {name} would inflate to {info.file_size} bytes from "
                                    f"{info.compress_size}; refused (at most {limit})")
            return self._zip.read(info)  # stops at the declared size; raises BadZipFile on a CRC mismatch
        except (zipfile.BadZipFile, OSError, EOFError, KeyError, NotImplementedError, RuntimeError) as exc:
            raise SelfmetaError(f"{self.path}: cannot read {name} ({exc})".splitlines()[0]) from None


def _strip_common_root(files: list[str]) -> tuple[str, list[tuple[str, ...]]]:
    parts = [PurePosixPath(f).parts for f in files]
    prefix = ""
    while (
        all(len(p) > 2 for p in parts)
        and len({p[0] for p in parts}) == 1
        and parts[0][0] not in SPLIT_DIRS
    ):
        prefix += parts[0][0] + "/"
        parts = [p[1:] for p in parts]
    return prefix, parts


@SOURCES.register("imagefolder")
class ImageFolder(DataSource):
    name = "imagefolder"
    description = "image folders root/<class>/<image> (PNG, JPEG...), optional train/ and test/, folder or .zip"
    catch_all = True  # detect takes any folder, so detection tries the other formats first

    def detect(self, path: Path) -> bool:
        return path.is_dir() or (path.is_file() and path.suffix.lower() == ".zip")

    def load(self, path: Path, split: str, **options: Any) -> Dataset:
        tree = _Tree(path)
        if not tree.files:
            raise SelfmetaError(f"{path}: no images ({', '.join(sorted(EXTENSIONS))}) found")
        prefix, parts = _strip_common_root(tree.files)
        has_splits = any(p[0] in SPLIT_DIRS and len(p) >= 3 for p in parts)
        wanted = SPLIT_DIRS if split == "all" else (split,)
        chosen: list[tuple[str, str]] = []  # (file inside the tree, class name)
        for p in parts:
            if has_splits:
                if len(p) != 3 or p[0] not in SPLIT_DIRS:
                    raise SelfmetaError(f"{path}: expected {{train,test}}/<class>/<image>, found {'/'.join(p)}")
                if p[0] in wanted:
                    chosen.append((prefix + "/".join(p), p[1]))
            else:
                if len(p) != 2:
                    raise SelfmetaError(f"{path}: expected <class>/<image>, found {'/'.join(p)}")
                chosen.append((prefix + "/".join(p), p[0]))
        if not chosen:
            raise SelfmetaError(f"{path}: the {split} split holds no images")
        # Class indices come from every split, so train and test agree even if a split lacks a class.
        classes = sorted({p[1] if has_splits else p[0] for p in parts})
        y, classes = labels_from_names([c for _, c in chosen], classes)
        x = decode_images([f for f, _ in chosen], tree.read)
        dataset = Dataset(x, y, classes, "image", path.stem)
        return dataset if has_splits else fixed_split(dataset, split)
