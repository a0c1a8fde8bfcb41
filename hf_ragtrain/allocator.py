"""Keep freed memory inside the process while training on CPU (glibc's malloc only).

A training step on CPU frees and allocates the same large activation tensors again and again. By
default glibc gives large freed blocks back to the kernel (through ``munmap`` and by trimming the top
of its heap), so the next tensor of that size starts as fresh pages that the kernel must fault in and
zero. With both thresholds raised for the duration of training, the blocks stay in the heap and are
reused: a MiniLM cross-encoder micro-batch (8 x 256 tokens, bf16, forward and backward) took 337-341
instead of 366-377 ms at the same peak there, while ColBERT's default job peaked 280 MB higher
(BENCHMARKS.md; ``--keep_freed_memory False`` turns it off).
Afterwards the trim threshold returns to glibc's default and the unused heap is handed back; the mmap
threshold stays raised, as glibc's own dynamic rule leaves it once large blocks have been freed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import sys
from typing import Iterator

logger = logging.getLogger(__name__)

#: ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: glibc's default trim threshold.
GLIBC_DEFAULT_TRIM = 128 * 1024
#: Blocks up to this size stay in the heap while training; glibc refuses more than half its
#: maximum heap size (32 MiB on 64-bit builds), in which case that is used.
KEEP_BLOCKS_UP_TO = 1 << 30


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):
        return None


def _set_thresholds(libc: ctypes.CDLL, size: int) -> int:
    """Set the mmap and trim thresholds to ``size`` (or 32 MiB where glibc refuses it); returns the size set."""
    for candidate in (size, 32 << 20):
        if libc.mallopt(M_MMAP_THRESHOLD, candidate) == 1:
            libc.mallopt(M_TRIM_THRESHOLD, candidate)
            return candidate
    return 0


@contextlib.contextmanager
def keep_freed_memory(size: int = KEEP_BLOCKS_UP_TO) -> Iterator[bool]:
    """Within the block, freed blocks up to ``size`` bytes stay in the process for reuse; yields whether
    that could be arranged (glibc on Linux), and logs what it did. On exit the trim threshold goes back to
    glibc's default and ``malloc_trim`` returns the unused heap to the system."""
    libc = _glibc()
    kept = _set_thresholds(libc, size) if libc is not None else 0
    if kept:
        logger.info("glibc malloc keeps freed blocks up to %d MiB while training (no page faults for "
                    "reused activations)", kept >> 20)
    try:
        yield bool(kept)
    finally:
        if kept:
            libc.mallopt(M_TRIM_THRESHOLD, GLIBC_DEFAULT_TRIM)
            libc.malloc_trim(0)
