"""Giving freed memory back to the OS between requests, so a worker's RSS stays flat."""
import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def trim_heap():
    """Return free heap pages to the OS (glibc's malloc_trim); a no-op elsewhere."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def limit_arenas(count=2):
    """Cap glibc's malloc arenas: each thread that allocates otherwise gets its own, and a pool
    of request threads then holds several copies of a photo's worth of freed memory."""
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        _LIBC.mallopt(M_ARENA_MAX, int(count))
