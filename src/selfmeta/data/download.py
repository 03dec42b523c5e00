"""Downloaders for MNIST, CIFAR-10 and Omniglot from their official addresses, verified by MD5, into a cache folder.

The cache defaults to ``$SELFMETA_CACHE`` or ``~/.cache/selfmeta``. A download goes to a temporary file
and is renamed only once its checksum matches, so a broken download never looks like a finished one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from selfmeta.errors import SelfmetaError
from selfmeta.files import temporary_name


@dataclass(frozen=True)
class RemoteFile:
    url: str
    md5: str


# The checksums published with the official files (also used by torchvision).
MNIST = [
    RemoteFile("http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    RemoteFile("http://yann.lecun.com/exdb/mnist/train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    RemoteFile("http://yann.lecun.com/exdb/mnist/t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    RemoteFile("http://yann.lecun.com/exdb/mnist/t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
]
CIFAR10 = RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
# Lake et al.'s two zips, as the omniglot source reads them (not unpacked).
OMNIGLOT = [
    RemoteFile(
        "https://github.com/brendenlake/omniglot/raw/master/python/images_background.zip",
        "68d2efa1b9178cc56df9314c21c6e718",
    ),
    RemoteFile(
        "https://github.com/brendenlake/omniglot/raw/master/python/images_evaluation.zip",
        "6b91aef0f799c5bb55b94e3f2daec811",
    ),
]


def cache_dir() -> Path:
    return Path(os.environ.get("SELFMETA_CACHE", Path.home() / ".cache" / "selfmeta"))


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(remote: RemoteFile, folder: Path) -> Path:
    """Download ``remote`` into ``folder`` unless a verified copy is already there.

    The download goes to a temporary file of this process's own (two downloads at once never share one)
    and takes its real name only once its checksum matches.
    """
    target = folder / remote.url.rsplit("/", 1)[-1]
    if target.is_file() and md5sum(target) == remote.md5:
        return target
    partial = temporary_name(target)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(remote.url, timeout=60) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        if md5sum(partial) != remote.md5:
            raise SelfmetaError(f"{remote.url}: checksum mismatch, download discarded")
        os.replace(partial, target)
    except (urllib.error.URLError, OSError) as exc:
        raise SelfmetaError(f"cannot download {remote.url} into {folder} ({exc})".splitlines()[0]) from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return target


def download_mnist(root: Path | None = None) -> Path:
    """Fetch the four MNIST IDX files; returns the folder to pass as ``--data``."""
    folder = (root or cache_dir()) / "mnist"
    for remote in MNIST:
        fetch(remote, folder)
    return folder


def safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The archive's members if every one is a plain file or folder inside it (what ``filter="data"`` checks;
    that filter needs Python 3.10.12 / 3.11.4 or later)."""
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise SelfmetaError(f"{tar.name}: unsafe member {member.name!r} (absolute, outside the folder, or a link)")
    return tar.getmembers()


def download_cifar10(root: Path | None = None) -> Path:
    """Fetch and unpack CIFAR-10 (python batches); returns ``.../cifar-10-batches-py``.

    The archive is unpacked into a temporary folder that is renamed when complete, so an interrupted
    extraction never passes for a finished one.
    """
    root = root or cache_dir()
    folder = root / "cifar-10-batches-py"
    if folder.is_dir():
        return folder
    archive = fetch(CIFAR10, root)
    staging = temporary_name(folder)
    try:
        with tarfile.open(archive) as tar:
            members = safe_members(tar)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:
                tar.extractall(staging, members=members)
        os.replace(staging / folder.name, folder)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SelfmetaError(f"{archive}: cannot unpack ({exc})".splitlines()[0]) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def download_omniglot(root: Path | None = None) -> Path:
    """Fetch images_background.zip and images_evaluation.zip; returns the folder to pass as ``--data``."""
    folder = (root or cache_dir()) / "omniglot"
    for remote in OMNIGLOT:
        fetch(remote, folder)
    return folder


DOWNLOADERS = {"mnist": download_mnist, "cifar10": download_cifar10, "omniglot": download_omniglot}
