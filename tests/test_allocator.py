"""The server fixes glibc's mmap threshold, so large freed buffers go back to the system.

Shown on glibc's own accounting (``mallinfo2().hblkhd``: bytes in mmapped chunks): after an
8 MiB buffer is freed, a 2 MiB one comes from the heap unless the threshold was fixed, and
then it is mmapped (and unmapped at free)."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
from logclass.core.allocator import fix_mmap_threshold

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]


libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = Mallinfo2
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
big = bytearray(8 << 20)
del big  # glibc's dynamic threshold rises to 8 MiB here
before = libc.mallinfo2().hblkhd
buffer = bytearray(2 << 20)
print(libc.mallinfo2().hblkhd - before >= 2 << 20)
"""


def _mmapped(mode: str) -> bool:
    out = subprocess.run(
        [sys.executable, "-c", "import ctypes.util\n" + PROBE, mode], capture_output=True, text=True, check=True
    )
    return out.stdout.strip() == "True"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's mmap threshold is glibc's")
def test_a_large_buffer_after_a_larger_free_is_mmapped_only_with_the_threshold_fixed() -> None:
    assert ctypes.util.find_library("c")
    assert not _mmapped("dynamic")
    assert _mmapped("fixed")
