"""Text sources: documents kept as raw strings, which the ``text`` modality tokenizes later.

A text Dataset has ``x`` None and ``raw`` an object array of ``str`` documents (:mod:`selfmeta.data.dataset`);
the run fits its tokenizer on the training split. Three layouts:

- ``lines`` (the SMS Spam Collection's): one document a line, ``label<TAB>text``, in a file with no suffix
  or ``.txt``. The label is everything before the first tab (stripped), the text everything after it (more
  tabs included). Blank lines are skipped; a line without a tab is an error naming the line. Detected when
  the first few non-empty lines all have a short label (at most ``MAX_LABEL`` characters) before a tab and
  at least one of them has text that is not just numbers (so a tab-separated file of numbers is not taken).
- ``textfolder``: one ``.txt`` file a document, one folder a class, ``root/<class>/<doc>.txt``; with
  ``root/train/<class>/...`` and ``root/test/<class>/...`` those are the splits (``all`` is both), else the
  fixed stratified 80/20 split. Files next to the class folders (a README) are ignored. Detected when the
  class folders hold ``.txt`` files and nothing else, so a folder of images goes to ``imagefolder``.
- Tables with text columns (CSV, TSV, Parquet, JSON Lines and a folder of ``train``/``test`` tables, given
  ``--text-column``) are read by :mod:`selfmeta.data.sources.table`, with :func:`documents_from_columns`.

Every file is read as UTF-8 (a leading byte-order mark is dropped); an invalid byte is one error naming
the file and the line it is on. A document with no text (an empty line after the tab, an empty ``.txt``
file, a table row whose text columns are all missing) is kept as the empty string, so that the items stay
in step with the lines or rows of the file (``embed`` writes one row per item). A corpus with no document
at all, or a split with none, is an error. Memory stays a small multiple of the files' size.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from selfmeta.data.dataset import Dataset, fixed_split, labels_from_names
from selfmeta.data.source import SOURCES, DataSource
from selfmeta.errors import SelfmetaError

MAX_LABEL = 32          # characters of a label before the tab, for detecting the ``lines`` layout
DETECT_LINES = 5        # non-empty lines ``lines`` looks at to detect its layout
DETECT_BYTES = 64 * 1024
SPLIT_DIRS = ("train", "test")


def decode_utf8(data: bytes, where: str | Path) -> str:
    """The text of a file's bytes; invalid UTF-8 is one SelfmetaError naming the 1-based line of the first bad byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SelfmetaError(f"{where}, line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
                            "save the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SelfmetaError(f"cannot read {path} ({exc})") from None


def text_dataset(documents: Sequence[str], labels: Sequence[str] | None, name: str, where: str | Path,
                 classes: list[str] | None = None) -> Dataset:
    """Documents (and their class names, or None) -> a text Dataset with ``raw`` set and ``x`` None."""
    if len(documents) == 0:
        raise SelfmetaError(f"{where}: no documents")
    y = None
    if labels is not None:
        y, classes = labels_from_names(list(labels), classes)
    raw = np.empty(len(documents), dtype=object)  # filled, not np.array(...): never a 2-D array of characters
    raw[:] = list(documents)
    return Dataset(None, y, classes or [], "text", name, raw=raw)


def split_of(dataset: Dataset, split: str, where: str | Path) -> Dataset:
    """:func:`fixed_split`, with an empty split named by the file rather than the data set's name."""
    try:
        return fixed_split(dataset, split)
    except SelfmetaError as exc:
        raise SelfmetaError(f"{where}: {str(exc).removeprefix(dataset.name + ': ')}") from None


def text_columns(text_column: str | Sequence[str] | None) -> list[str] | None:
    """The ``text_column`` option (one name or a list, as ``--text-column`` repeated gives) -> names, or None."""
    if text_column is None:
        return None
    names = [text_column] if isinstance(text_column, str) else [str(c) for c in text_column]
    return list(dict.fromkeys(names)) or None


def documents_from_columns(frame: Any, columns: list[str], where: str | Path) -> list[str]:
    """One document a row of a pandas DataFrame: its ``columns`` joined with a newline, missing or empty values
    skipped (a row with none is the empty string). Bytes (Parquet binary columns) must be UTF-8; other values
    (numbers) are written with ``str``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SelfmetaError(f"{where}: no text column {', '.join(map(repr, missing))}; "
                            f"columns: {', '.join(map(str, frame.columns))}")
    parts: list[list[str]] = []
    for column in columns:
        values = frame[column]
        absent = values.isna().to_numpy()
        texts = []
        for row, (value, skip) in enumerate(zip(values.tolist(), absent)):
            if skip:
                texts.append("")
            elif isinstance(value, str):
                texts.append(value)
            elif isinstance(value, bytes):
                try:
                    texts.append(value.decode("utf-8"))
                except UnicodeDecodeError:
                    raise SelfmetaError(f"{where}, row {row + 1}: column {column!r} is not valid UTF-8") from None
            else:
                texts.append(str(value))
        parts.append(texts)
    if len(parts) == 1:
        return parts[0]
    return ["\n".join(p for p in row if p) for row in zip(*parts)]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _lines_head(path: Path) -> list[str] | None:
    """The first non-empty lines of a small-enough prefix of a file, or None for a binary file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(DETECT_BYTES)
    except OSError:
        return None
    if b"\0" in head:
        return None
    pieces = head.decode("utf-8", errors="replace").removeprefix("\ufeff").split("\n")
    if len(head) == DETECT_BYTES:
        pieces = pieces[:-1]  # cut short by the prefix
    return [p.rstrip("\r") for p in pieces if p.strip()][:DETECT_LINES]


@SOURCES.register("lines")
class Lines(DataSource):
    name = "lines"
    description = "one document a line, label<TAB>text (the SMS Spam Collection), a file with no suffix or .txt"

    def detect(self, path: Path) -> bool:
        if not (path.is_file() and path.suffix.lower() in ("", ".txt")):
            return False
        lines = _lines_head(path)
        if not lines:
            return False
        fields = [line.partition("\t") for line in lines]
        return (all(tab and 0 < len(label.strip()) <= MAX_LABEL for label, tab, _ in fields)
                and any(not all(_is_number(v) for v in text.split("\t")) for _, _, text in fields))

    def load(self, path: Path, split: str, **options: Any) -> Dataset:
        text = decode_utf8(read_bytes(path), path)
        labels: list[str] = []
        documents: list[str] = []
        for number, line in enumerate(text.split("\n"), 1):
            line = line.removesuffix("\r")
            if not line.strip():
                continue
            label, tab, document = line.partition("\t")
            if not tab:
                raise SelfmetaError(f"{path}, line {number}: no tab; expected label<TAB>text")
            label = label.strip()
            if not label:
                raise SelfmetaError(f"{path}, line {number}: no label before the tab")
            labels.append(label)
            documents.append(document)
        del text
        return split_of(text_dataset(documents, labels, path.stem, path), split, path)


def _visible_dirs(folder: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _class_dirs(root: Path) -> dict[str, list[Path]] | None:
    """``{split: class folders}``: ``{"train": [...], "test": [...]}`` for root/{train,test}/<class>/, else
    ``{"all": [...]}`` for root/<class>/; None where root has no sub-folder."""
    train = root / "train"
    if train.is_dir() and _visible_dirs(train):
        return {s: _visible_dirs(root / s) for s in SPLIT_DIRS}
    found = _visible_dirs(root)
    return {"all": found} if found else None


def _only_txt(folders: list[Path]) -> bool:
    """Some ``.txt`` file, and no other kind, directly in ``folders`` (sub-folders and hidden files aside);
    stops at the first other file, so an image folder is turned down after one look."""
    seen = False
    try:
        for folder in folders:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.is_file():
                        continue
                    if not entry.name.lower().endswith(".txt"):
                        return False
                    seen = True
    except OSError:
        return False
    return seen


@SOURCES.register("textfolder")
class TextFolder(DataSource):
    name = "textfolder"
    description = "a folder of .txt documents, root/<class>/<doc>.txt, optional train/ and test/"

    def detect(self, path: Path) -> bool:
        if not path.is_dir():
            return False
        layout = _class_dirs(path)
        return layout is not None and _only_txt([d for dirs in layout.values() for d in dirs])

    def load(self, path: Path, split: str, **options: Any) -> Dataset:
        layout = _class_dirs(path)
        if layout is None:
            raise SelfmetaError(f"{path}: expected class folders of .txt files, <class>/<doc>.txt")
        has_splits = "all" not in layout
        if has_splits:
            extra = [d.name for d in _visible_dirs(path) if d.name not in SPLIT_DIRS]
            if extra:
                raise SelfmetaError(f"{path}: expected train/ and test/ only, found {extra[0]}/ beside them")
        files = {s: self._documents(path, dirs) for s, dirs in layout.items()}
        if not any(files.values()):
            raise SelfmetaError(f"{path}: no documents (<class>/<doc>.txt)")
        # Class indices from every split, so train and test agree even where a split lacks a class.
        classes = labels_from_names([c for found in files.values() for _, c in found])[1]
        wanted = list(layout) if split == "all" else [split] if has_splits else ["all"]
        chosen = [item for s in wanted for item in files.get(s, [])]
        if not chosen:
            raise SelfmetaError(f"{path}: the {split} split holds no documents")
        documents = [decode_utf8(read_bytes(f), f) for f, _ in chosen]
        dataset = text_dataset(documents, [c for _, c in chosen], path.name, path, classes)
        return dataset if has_splits else split_of(dataset, split, path)

    @staticmethod
    def _documents(root: Path, dirs: list[Path]) -> list[tuple[Path, str]]:
        """(file, class) for the ``.txt`` files of the class folders, in name order."""
        found = []
        for folder in dirs:
            for file in sorted(folder.iterdir()):
                if file.name.startswith("."):
                    continue
                if file.is_dir() or file.suffix.lower() != ".txt":
                    raise SelfmetaError(f"{root}: expected <class>/<doc>.txt, found {file.relative_to(root)}")
                found.append((file, folder.name))
        return found
