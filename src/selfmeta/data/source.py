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
    ``options`` lists the keyword options ``load`` takes (``label_column`` for tables): ``load_data`` refuses
    an option the format does not use, rather than ignore it;
    ``catch_all`` marks a format whose ``detect`` accepts almost anything (any folder): detection tries it last,
    so that a folder in a more specific layout (omniglot's zips, IDX files) is not taken for it.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    splits: ClassVar[tuple[str, ...]] = ("train", "test", "all")
    options: ClassVar[tuple[str, ...]] = ()
    catch_all: ClassVar[bool] = False

    def detect(self, path: Path) -> bool:
        raise NotImplementedError

    def load(self, path: Path, split: str, **options: Any) -> Dataset:
        raise NotImplementedError


SOURCES: Registry[type[DataSource]] = Registry("data format")

# The most a compressed input may expand (decompressed bytes per stored byte). Real images and IDX files
# compress 1-10x; a zip or gzip "bomb" of zeros reaches 1000x, and is refused before it is inflated.
MAX_RATIO = 250

# Bundled data sets addressed by name instead of a path.
BUNDLED = ("digits",)


def fingerprint(path: str | Path) -> dict[str, Any]:
    """Where the data is and its size on disk, which ``--resume`` compares with the run's (with the item
    count): cheap enough for millions of files, unlike a hash of every byte."""
    if str(path) in BUNDLED:
        return {"path": str(path)}
    path = Path(path).resolve()
    if path.is_file():
        return {"path": str(path), "bytes": path.stat().st_size}
    return {"path": str(path), "bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file())}


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
    for name in options:
        if name not in source.options:
            takers = [n for n in SOURCES.names() if name in SOURCES.get(n).options]
            flag = "--" + name.replace("_", "-")
            raise SelfmetaError(f"{flag} does not apply to {format} data"
                                + (f"; it is for {', '.join(takers)} data" if takers else ""))
    return source.load(Path(str(path)), split, **options)
