"""Process-wide allocator settings for steady inference (glibc malloc; framework-free).

glibc hands large blocks (above a threshold that starts at 128 KiB and adapts) to ``mmap`` and
trims the heap as soon as its free top passes a similar threshold. An inference call
allocates and frees the same large activation buffers every time, so by default each call
maps fresh pages and faults them in again: measured on the demo model at 640×480 on 2 CPU
cores, about 3 000 page faults per call and 27 frames/s, against 0 faults and 43 frames/s
with the settings below. Keeping freed memory in the heap costs at most the largest working
set the process has had, which a serving process holds anyway.

The ``posed`` command applies this at start-up; Python users who run models in a
long-lived process can call :func:`keep_freed_memory` themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses mmap thresholds above half its per-arena heap size on some versions; the
# first value it accepts is used.
THRESHOLDS = (1 << 30, 1 << 28, 32 << 20)

_applied: int | None = None


def keep_freed_memory() -> int | None:
    """Keep freed blocks in the heap instead of returning them to the kernel per call.

    Returns:
        The mmap/trim threshold now in force (bytes), or None where the C library is not
        glibc (nothing is changed there). Calling it again is a no-op.
    """
    global _applied
    if _applied is not None:
        return _applied
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        log.debug("allocator settings skipped: not glibc")
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - glibc always has mallopt
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    for value in THRESHOLDS:
        if mallopt(M_MMAP_THRESHOLD, value) == 1:
            mallopt(M_TRIM_THRESHOLD, value)
            _applied = value
            log.debug("allocator: mmap and trim thresholds %d MiB", value >> 20)
            return value
    return None
