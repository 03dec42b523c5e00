"""Files written whole or not at all: a temporary file beside the target, fsync, then an atomic rename.

Used for every file selfmeta writes (checkpoints, weights, configs, metrics, features, caches), so that a
kill, a crash or a full disk never leaves a half-written file under a real name. The temporary files carry
the writer's process id, so that the ones a killed process left behind can be told apart and removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Callable

from selfmeta.errors import SelfmetaError

TMP_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    """``.NAME.PID-RANDOM.tmp`` beside ``path``: unique, hidden, and it says which process wrote it."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}")


def writer_pid(name: str) -> int | None:
    """The process id in a temporary file's name (see :func:`temporary_name`), or None for other names."""
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return None
    pid = name[: -len(TMP_SUFFIX)].rsplit(".", 1)[-1].split("-")[0]
    return int(pid) if pid.isdigit() else None


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files that killed writers left in ``folder`` (their process is gone)."""
    for entry in folder.iterdir() if folder.is_dir() else ():
        pid = writer_pid(entry.name)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            entry.unlink(missing_ok=True)
        except PermissionError:  # a live process of another user
            pass


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    The temporary file is created with mode 0666 minus the process's umask, as ``open()`` would (mkstemp's
    0600 would make every result private). A failure to write (a full disk, a read-only folder) is one
    SelfmetaError line and leaves ``path`` as it was.
    """
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        reason = exc.strerror or str(exc)
        raise SelfmetaError(f"cannot write {path} ({reason}); nothing there was changed") from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):  # the folder itself may be what failed
        tmp.unlink(missing_ok=True)


