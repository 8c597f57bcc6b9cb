"""Keep the memory a pass frees for the next pass, instead of handing it back to the OS (glibc's malloc only).

Why: a training step or an evaluation pass allocates and frees maps of
megabytes (one stage-1 map of regnet20 at batch 128 is 8 MB). glibc serves
blocks that large by ``mmap``, or gives the top of its heap back to the OS
once more than twice the largest freed block lies free there, and the
threshold it adapts as it goes depends on the order of the frees. Either way
the next pass gets fresh pages, and the kernel faults and zeroes each 4 KB
page on first touch. Measured (``bench/allocator.py``, ``bench/README.md``'s
ninth round): a regnet20 training step took 2,600-14,600 page faults
(median 8,600) and 2% more CPU time; of two processes that evaluated a
split, one took 150 faults per image and 40% more. Fixed thresholds end
it; a process's peak memory is unchanged, it is only kept between passes.
"""
from __future__ import annotations

import ctypes
import functools
import platform

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEPT_BYTES = 1 << 30  # blocks below this come from the heap; up to this much free at its top is kept


@functools.cache
def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds at :data:`KEPT_BYTES`, once per process; False where that cannot be done.

    The mmap threshold goes first: a trim threshold set alone would also fix
    the mmap threshold at its 128 KB start, and every map would be mmapped.
    Elsewhere than glibc (macOS, musl) nothing is changed.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, KEPT_BYTES)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEPT_BYTES))
