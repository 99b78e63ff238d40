"""The C allocator's behaviour for a long-running server.

glibc serves a large allocation (a multi-MiB request, a decoded source) from mmap and gives it
back at free, until the first such free: then it raises its mmap threshold to that size (up to
32 MiB), so later buffers of that size come from the heap arenas, and the memory freed there
stays with the process. A server that takes hostile requests of every size up to its limits
kept +65 MiB after 200 requests of 3 x 4 MiB sources; with the threshold fixed at 1 MiB, +24
MiB (bench-hostile). Fixing it also fixes the trim threshold (mallopt(3)).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("logclass.allocator")

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Allocations of ``threshold`` bytes or more go to mmap, for good. True when the C
    library took it; False on one without mallopt (musl, macOS), where nothing changes."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    taken = bool(mallopt(M_MMAP_THRESHOLD, threshold))
    if not taken:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) refused; large freed buffers may stay with the process", threshold)
    return taken
