"""Omniglot (Lake et al., 2015) read from the official zips, in the standard few-shot protocol.

A folder holding ``images_background.zip`` and ``images_evaluation.zip`` (or the two folders they unzip to,
``images_background/`` and ``images_evaluation/``), laid out as ``images_<zip>/<Alphabet>/<characterNN>/<id>.png``:
1623 characters from 50 alphabets, 20 drawings each, 105x105 1-bit PNG, black strokes on white.

The usual few-shot protocol (Santoro et al., 2016; Vinyals et al., 2016; Snell et al., 2017):

* Every drawing is inverted, so strokes are bright (255) on a dark (0) background like MNIST, and resized
  to 28x28 with Pillow's Lanczos filter (antialiased).
* Each character rotated by 0, 90, 180 and 270 degrees (counter-clockwise, ``np.rot90``) is its own class,
  named ``Alphabet/characterNN/rot000`` ... ``rot270``.
* 1028 train / 172 val / 423 test characters, fixed by ``omniglot_split.txt`` next to this file and never
  reshuffled: whole alphabets, the test characters from the evaluation zip (the file's header gives the rule).
  These are the sizes of Vinyals et al.'s split, not its exact character lists.

Splits share no class (the few-shot setting: test classes are unseen), so each split numbers its own classes
from 0, in split-file order then rotation; ``all`` is train, val, test in that order. ``split_file=PATH``
loads another split file in the same format (the tests use a tiny one).

Decoding the 32,460 PNGs takes about 4 s on one core, so the 28x28 un-rotated images of each zip are cached
in ``$SELFMETA_CACHE`` (default ``~/.cache/selfmeta``) as an ``.npz`` whose name holds a hash of the zip's central directory;
a cached load takes about a tenth of a second. Where that folder cannot be written, nothing is cached.

Example::

    train = load_data("../shared/data/omniglot", split="train")   # x: (82240, 1, 28, 28) uint8, 4112 classes
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from selfmeta.data.dataset import Dataset
from selfmeta.data.download import cache_dir
from selfmeta.data.source import SOURCES, DataSource
from selfmeta.data.sources.imagefolder import _Tree, open_image
from selfmeta.errors import SelfmetaError
from selfmeta.files import atomic_write

log = logging.getLogger(__name__)

PARTS = ("background", "evaluation")
SPLIT_FILE = Path(__file__).with_name("omniglot_split.txt")
SIZE = 28
ROTATIONS = (0, 90, 180, 270)
# Part of every cache file's name: change it whenever the decoding changes, and old caches are ignored.
CACHE_VERSION = "v1"


@dataclass(frozen=True)
class Character:
    split: str       # train | val | test
    part: str        # background | evaluation: the zip it is in
    name: str        # Alphabet/characterNN


def read_split_file(path: Path) -> list[Character]:
    """Parse ``split<TAB>background|evaluation<TAB>Alphabet/characterNN`` lines; ``#`` starts a comment line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SelfmetaError(f"cannot read the omniglot split file {path} ({exc})") from None
    characters, seen = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if (
            len(fields) != 3
            or fields[0] not in ("train", "val", "test")
            or fields[1] not in PARTS
            or len(PurePosixPath(fields[2]).parts) != 2
        ):
            raise SelfmetaError(
                f"{path}, line {number}: expected train|val|test<TAB>background|evaluation<TAB>Alphabet/character, "
                f"found {line!r}"
            )
        if fields[2] in seen:
            raise SelfmetaError(f"{path}, line {number}: {fields[2]} is listed twice")
        seen.add(fields[2])
        characters.append(Character(*fields))
    return characters


def _part_location(folder: Path, part: str) -> Path:
    """``images_<part>.zip``, else the unzipped ``images_<part>/`` folder."""
    for candidate in (folder / f"images_{part}.zip", folder / f"images_{part}"):
        if candidate.exists():
            return candidate
    raise SelfmetaError(f"{folder}: no images_{part}.zip (nor an images_{part}/ folder)")


def _fingerprint(location: Path) -> str:
    """A hash of the content: of a zip's central directory (every member's name, CRC-32 and size, read
    without inflating anything), or of a folder's PNG files (names and bytes). A file edited in place,
    whatever its size and time stamp, gives another cache."""
    digest = hashlib.sha256()
    if location.is_file():
        try:
            with zipfile.ZipFile(location) as archive:
                for info in sorted(archive.infolist(), key=lambda i: i.filename):
                    digest.update(f"{info.filename}\0{info.CRC}\0{info.file_size}\n".encode())
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise SelfmetaError(f"{location}: corrupt or truncated zip file ({exc})") from None
        return "zip" + digest.hexdigest()[:16]
    for file in sorted(location.rglob("*.png")):
        digest.update(f"{file.relative_to(location).as_posix()}\0".encode())
        digest.update(file.read_bytes())
    return "dir" + digest.hexdigest()[:16]


def _decode(name: str, data: bytes) -> np.ndarray:
    """One drawing -> (28, 28) uint8, not yet inverted (white background)."""
    with open_image(name, data) as image:
        small = image.convert("L").resize((SIZE, SIZE), Image.LANCZOS)
    return np.asarray(small, dtype=np.uint8)


def _decode_part(location: Path, part: str) -> tuple[list[str], np.ndarray]:
    """Every PNG of one zip or folder -> (``Alphabet/characterNN/file.png`` names, (M, 28, 28) uint8 images)."""
    tree = _Tree(location)  # a corrupt or truncated zip raises SelfmetaError here
    prefix = f"images_{part}/"
    files = [f for f in tree.files if f.lower().endswith(".png")]
    names = [f.removeprefix(prefix) for f in files]
    for name in names:
        if len(PurePosixPath(name).parts) != 3:
            raise SelfmetaError(f"{location}: expected {prefix}<Alphabet>/<character>/<image>.png, found {name}")
    if not names:
        raise SelfmetaError(f"{location}: no PNG images")
    images = np.empty((len(names), SIZE, SIZE), dtype=np.uint8)  # (M, 28, 28)

    def fill(i: int) -> None:
        images[i] = _decode(f"{location}: {files[i]}", tree.read(files[i]))

    # Pillow releases the GIL while decoding, so threads help, but only with cores to run on: on one core they
    # cost a third more than a plain loop.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores == 1:
        for i in range(len(files)):
            fill(i)
    else:
        with ThreadPoolExecutor(max_workers=min(4, cores)) as pool:
            list(pool.map(fill, range(len(files))))
    return names, 255 - images  # strokes bright on dark, like MNIST


def _load_cache(path: Path) -> tuple[list[str], np.ndarray] | None:
    """A cached part, or None when absent or unreadable (then it is decoded again and rewritten)."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            names, images = cached["names"], cached["images"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if names.dtype.kind != "U" or images.dtype != np.uint8 or images.shape != (len(names), SIZE, SIZE):
        return None
    return names.tolist(), images


def _save_cache(path: Path, names: list[str], images: np.ndarray) -> None:
    """Write atomically; skip (the next load decodes again) where the cache folder cannot be written."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, names=np.array(names, dtype=str), images=images)

    try:
        atomic_write(path, write)
    except SelfmetaError as exc:
        log.info("omniglot: not cached (%s)", exc)


def part_images(folder: Path, part: str) -> tuple[list[str], np.ndarray]:
    """The 28x28 un-rotated images of one zip (names, (M, 28, 28) uint8), from the cache where it has them."""
    location = _part_location(folder, part)
    cached = cache_dir() / f"omniglot-{part}-{_fingerprint(location)}-{CACHE_VERSION}.npz"
    hit = _load_cache(cached) if cached.is_file() else None
    if hit is not None:
        return hit
    names, images = _decode_part(location, part)
    _save_cache(cached, names, images)
    return names, images


@SOURCES.register("omniglot")
class Omniglot(DataSource):
    name = "omniglot"
    description = "Omniglot zips (images_background/evaluation.zip): 28x28, 4 rotations per class, fixed train/val/test"
    splits = ("train", "val", "test", "all")
    options = ("split_file",)

    def detect(self, path: Path) -> bool:
        return path.is_dir() and all(
            (path / f"images_{part}.zip").is_file() or (path / f"images_{part}").is_dir() for part in PARTS
        )

    def load(self, path: Path, split: str, split_file: str | Path | None = None, **options: Any) -> Dataset:
        split_file = Path(split_file) if split_file is not None else SPLIT_FILE
        order = {"train": 0, "val": 1, "test": 2}
        chosen = [c for c in read_split_file(split_file) if split == "all" or c.split == split]
        chosen.sort(key=lambda c: order[c.split])  # "all" is train, val, test; stable within a split
        if not chosen:
            raise SelfmetaError(f"{split_file}: no characters in the {split} split")

        # Rows of each needed zip, grouped by character: "Alphabet/characterNN" -> row indices, drawings in name order.
        images, rows = {}, {}
        for part in dict.fromkeys(c.part for c in chosen):
            names, images[part] = part_images(path, part)
            rows[part] = {}
            for i, name in enumerate(names):
                rows[part].setdefault(name.rsplit("/", 1)[0], []).append(i)
        pieces, counts = [], []
        for c in chosen:
            index = rows[c.part].get(c.name)
            if index is None:
                raise SelfmetaError(
                    f"{path}: images_{c.part} has no folder {c.name}, listed in the split file {split_file.name}"
                )
            pieces.append(images[c.part][index])
            counts.append(len(index))
        base = torch.from_numpy(np.concatenate(pieces))  # (M, 28, 28), characters in split-file order
        # One batched rotation per angle: (4, M, 28, 28); k quarter turns counter-clockwise, as np.rot90.
        rotated = torch.stack([torch.rot90(base, k, dims=(1, 2)) for k in range(len(ROTATIONS))])

        # Class c*4 + k is character c turned k times. Order the items by class, each class's drawings in order.
        m = len(base)
        character = torch.repeat_interleave(torch.arange(len(chosen)), torch.tensor(counts))        # (M,)
        turns = torch.arange(len(ROTATIONS)).repeat_interleave(m)                                   # (4M,)
        rows_all = torch.arange(m).repeat(len(ROTATIONS))                                           # (4M,)
        label = character[rows_all] * len(ROTATIONS) + turns                                        # (4M,)
        order_items = torch.argsort(label, stable=True)
        x = rotated[turns[order_items], rows_all[order_items]].unsqueeze(1).contiguous()            # (4M, 1, 28, 28)
        y = label[order_items]
        classes = [f"{c.name}/rot{angle:03d}" for c in chosen for angle in ROTATIONS]
        return Dataset(x, y, classes, "image", "omniglot")
