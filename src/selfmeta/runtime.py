"""What the machine can do, asked once: native bf16, the CPU's vector extensions, and the allocator.

- ``precision=auto`` takes bf16 autocast only where the hardware computes it natively: x86 CPUs with
  AVX-512 BF16 or AMX, and CUDA GPUs that support bf16. Elsewhere (most laptops: AVX2 only) bf16 is
  emulated, and a Conv-4 SimCLR step ran six times slower in bf16 than in fp32 on such a CPU.
- :func:`tune_allocator` keeps glibc's allocator from handing the large blocks of every training step back
  to the kernel and faulting them in again: a fifth to two fifths of the CPU time went to the kernel
  (BENCHMARKS.md). The command line calls it once at start; importing selfmeta changes nothing process-wide.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import platform
from pathlib import Path

import torch

log = logging.getLogger(__name__)

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of x86 CPUs with native bf16 arithmetic
# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_description() -> str:
    """The vector extensions that decide CPU speed, e.g. ``x86_64 AVX-512 BF16 AMX`` or ``x86_64 AVX2``."""
    flags = cpu_flags()
    named = [("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "BF16"), ("amx_bf16", "AMX")]
    found = [name for flag, name in named if flag in flags]
    if "AVX-512" in found:
        found.remove("AVX2")
    return " ".join([platform.machine(), *found])


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (so bf16 autocast is faster there, not slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the device has native bf16, else ``fp32``; a forced bf16 on a CPU without it
    runs, with a one-line warning."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        log.warning("precision=bf16 on a %s without native bf16: it is emulated and can be several times slower "
                    "than fp32 (precision=auto chooses for you)", "GPU" if device.type == "cuda" else "CPU")
    return precision


@functools.cache
def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc only): no ``mmap`` for large blocks (``M_MMAP_MAX=0``) and no
    trimming of the heap (``M_TRIM_THRESHOLD=-1``), so a training step reuses the previous step's memory
    instead of faulting it in again page by page. The process keeps its peak memory until it exits.

    Whole training runs took 1.3-1.6x less wall time, with 7-25x less system time, and reached 1.2-1.8x
    higher peak memory (large blocks carved from one heap fragment it; BENCHMARKS.md,
    ``benchmarks/allocator.py``). ``SELFMETA_MALLOC=default`` in the environment leaves glibc as it is.
    Returns whether the settings took effect (False off glibc: macOS, musl; or when opted out).
    """
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or name is None or os.environ.get("SELFMETA_MALLOC") == "default":
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
    except (OSError, AttributeError):  # not glibc
        return False
