"""Giving freed memory back to the system.

A sidecar reads a whole tree at start (tens of MB of file content) and then idles for
months. CPython frees those objects, but glibc's allocator keeps the freed heap pages
mapped (fragmented by what survives), so the resident size stays at its peak. After a
commit the daemon asks glibc to return free pages (malloc_trim), which keeps the idle
footprint near what is really in use. A no-op where glibc's malloc_trim is missing.
"""
from __future__ import annotations

import ctypes
import ctypes.util


def _find_trim():
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _find_trim()


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system; True when there were some."""
    return bool(_TRIM(0)) if _TRIM is not None else False
