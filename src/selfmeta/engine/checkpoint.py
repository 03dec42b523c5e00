"""Checkpoints and exported weights, written atomically (temporary file, fsync, rename).

- ``checkpoint.pt``: everything needed to resume (model, optimizer, counters, RNG), saved with
  ``torch.save`` and read back with ``weights_only=True``: no arbitrary object is ever unpickled.
- ``encoder.safetensors``: the backbone's weights (normalization + encoder) with a JSON description in
  the safetensors metadata, enough to rebuild it: this is what ``embed``, ``evaluate`` and the API load.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from safetensors import safe_open

from selfmeta.errors import SelfmetaError
from selfmeta.files import atomic_write

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "encoder.safetensors"
def _write_bytes(data: bytes) -> Callable[[Path], None]:
    return lambda tmp: tmp.write_bytes(data)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    # Serialized in memory, then written by Python: torch's own file writer reports a full disk as an
    # opaque RuntimeError ("unexpected pos"), Python's as OSError(ENOSPC).
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, _write_bytes(buffer.getvalue()))


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SelfmetaError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise SelfmetaError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], description: dict[str, Any]) -> None:
    """Tensors (copied: safetensors refuses tensors that share memory) and the description as metadata."""
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state_dict.items()}
    atomic_write(path, _write_bytes(save(tensors, metadata={"selfmeta": json.dumps(description)})))


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
