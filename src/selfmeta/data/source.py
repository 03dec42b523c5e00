"""The data-source contract, its registry, and ``load_data`` which picks a source from the path.

A source turns a path (or a bundled name such as ``digits``) into a :class:`Dataset` for one split.
Sources with their own train/test files use them; the others get :func:`fixed_split`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from selfmeta.data.dataset import SPLITS, Dataset
from selfmeta.errors import SelfmetaError
from selfmeta.registry import Registry


class DataSource:
    """Contract: ``detect`` says whether a path is in this format; ``load`` reads one split.

    Subclasses set ``name`` (the ``--format`` value) and ``description`` (shown by ``selfmeta list``).
    ``load`` raises :class:`SelfmetaError` on anything malformed: truncated, corrupt, empty.
    ``splits`` lists the splits ``load`` serves (``load_data`` refuses the others with a clear error);
    ``catch_all`` marks a format whose ``detect`` accepts almost anything (any folder): detection tries it last,
    so that a folder in a more specific layout (omniglot's zips, IDX files) is not taken for it.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    splits: ClassVar[tuple[str, ...]] = ("train", "test", "all")
    catch_all: ClassVar[bool] = False

    def detect(self, path: Path) -> bool:
        raise NotImplementedError

    def load(self, path: Path, split: str, **options: Any) -> Dataset:
        raise NotImplementedError


SOURCES: Registry[type[DataSource]] = Registry("data format")

# Bundled data sets addressed by name instead of a path.
BUNDLED = ("digits",)


def detect_format(path: str | Path) -> str:
    if str(path) in BUNDLED:
        return str(path)
    path = Path(path)
    if not path.exists():
        raise SelfmetaError(f"no such file or folder: {path}")
    # Alphabetical, catch-all formats last (sorted() is stable).
    for name in sorted(SOURCES.names(), key=lambda name: SOURCES.get(name).catch_all):
        if SOURCES.get(name)().detect(path):
            return name
    raise SelfmetaError(f"cannot tell the data format of {path}; pass --format, one of: {', '.join(SOURCES.names())}")


def load_data(path: str | Path, split: str = "train", format: str | None = None, **options: Any) -> Dataset:
    """Load one split (``train``, ``test`` or ``all``; ``val`` where the source has one) of the data at ``path``.

    Example::

        train = load_data("../shared/data/mnist", split="train")   # IDX files
        table = load_data("customers.csv", label_column="churn")
    """
    if split not in SPLITS:
        raise SelfmetaError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    import selfmeta.data.sources  # noqa: F401  (registers the built-in sources)

    format = format or detect_format(path)
    source = SOURCES.get(format)()
    if split not in source.splits:
        raise SelfmetaError(f"the {format} format has no {split!r} split; valid: {', '.join(source.splits)}")
    if str(path) not in BUNDLED and not Path(path).exists():
        raise SelfmetaError(f"no such file or folder: {path}")
    return source.load(Path(str(path)), split, **options)
