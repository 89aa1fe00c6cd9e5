"""Running the networks on a CPU: which arithmetic the CPU does natively, and how freed memory is kept for reuse.

* :func:`cpu_has_native_bf16` — whether bfloat16 is computed natively (AVX-512 BF16 or AMX), where
  :class:`~PASegLib.inference.predictor.Predictor` predicts in bfloat16 by default;
* :func:`cpu_heap_reuse` — glibc's allocator kept from returning freed blocks to the system while the sliding
  windows run (the same numbers, less time).

Imports torch (for the CPU feature probes).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
from typing import Any, Iterator, Optional

import torch

__all__ = ["cpu_has_native_bf16", "cpu_heap_reuse"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_heap_lock = threading.Lock()
_heap_users = 0


def _glibc() -> Optional[Any]:
    """The C library when it is glibc (``mallopt`` and ``malloc_trim``), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (not musl)
        return libc
    except (OSError, AttributeError):
        return None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX-512 BF16 or AMX), where bfloat16 convolutions are
    2–3× faster than float32 (measured on an AVX-512 BF16 CPU). Elsewhere bfloat16 is emulated or missing and
    not expected to be faster (not measured: no such CPU was at hand), so prediction stays in float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    except RuntimeError:  # pragma: no cover - a torch build without the CPU probes
        return False


@contextlib.contextmanager
def cpu_heap_reuse() -> Iterator[bool]:
    """While inside, glibc's ``malloc`` keeps freed memory for reuse instead of giving it back to the system.

    Why: a forward pass of a 3D U-Net allocates and frees activations of tens to hundreds of MB. glibc serves
    blocks above 32 MB (and, until its threshold adapts, above 128 KB) with ``mmap`` and returns them on
    ``free``, so every layer page-faults its output in afresh: ~300,000 page faults per 128×128×48 window
    (measured on a 2-core virtual machine: 0.56 s of system time per 2.7 s of CPU time, none with reuse; a
    256×256×64 prediction took 35–50 % less CPU time, ``benchmarks/bench_predict.py`` modes ``plain`` and
    ``fp32``). Inside, every block comes from the heap and a freed one is reused by the next layer; the process
    keeps its peak memory until the block ends, when ``malloc_trim`` returns the free pages. Numerics are
    unchanged.

    On exit ``mmap`` is allowed again with thresholds of 32 MB (``mmap``) and 64 MB (trim): the most glibc's
    adaptive rule raises them to as a process frees large blocks, and that rule stays off afterwards (glibc
    turns it off once they are set). A no-op yielding ``False`` where the C library is not glibc (macOS,
    Windows, musl). Nested and concurrent uses are counted: the last one out restores.
    """
    global _heap_users
    libc = _glibc()
    if libc is None:
        yield False
        return
    with _heap_lock:
        if _heap_users == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 2**30)
        _heap_users += 1
    try:
        yield True
    finally:
        with _heap_lock:
            _heap_users -= 1
            if _heap_users == 0:
                libc.mallopt(_M_MMAP_MAX, 65536)
                libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
                libc.mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)
                libc.malloc_trim(0)
