"""Checkpoints and exported weights, written atomically (temporary file, fsync, rename).

- ``checkpoint.pt``: everything needed to resume (model, optimizer, counters, RNG), saved with
  ``torch.save`` and read back with ``weights_only=True``: no arbitrary object is ever unpickled.
- ``encoder.safetensors``: the backbone's weights (normalization + encoder) with a JSON description in
  the safetensors metadata, enough to rebuild it: this is what ``embed``, ``evaluate`` and the API load.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from selfmeta.errors import SelfmetaError

CHECKPOINT = "checkpoint.pt"
_UMASK = os.umask(0)
os.umask(_UMASK)
WEIGHTS = "encoder.safetensors"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SelfmetaError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise SelfmetaError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], description: dict[str, Any]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"selfmeta": json.dumps(description)}))


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not Path(path).is_file():
        raise SelfmetaError(f"no weights at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        description = json.loads(metadata["selfmeta"])
        return load_file(str(path)), description
    except (SafetensorError, KeyError, ValueError, OSError) as exc:
        raise SelfmetaError(f"{path}: not a selfmeta weights file ({exc})".splitlines()[0]) from None
