"""Giving freed memory back to the OS between requests, so a worker's RSS stays flat."""
import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # glibc's mallopt parameter numbers
M_MMAP_THRESHOLD = -3
# Once the model is loaded, blocks under this size come from the heap and are reused by the next
# request instead of being mapped afresh (page faults: see raise_mmap_threshold_for_serving).
SERVING_MMAP_THRESHOLD = 4 * 1024 * 1024
_fixed_threshold = None  # the threshold this process chose with set_mmap_threshold, if any


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


def set_mmap_threshold(nbytes=131072):
    """Serve allocations of ``nbytes`` and more with mmap, so they go back to the OS when freed.

    glibc otherwise raises the threshold as large blocks are freed (up to 32 MB), and the image
    buffers of later requests then stay on the heap: measured with ONNX Runtime, a worker's peak
    swung 455-620 MB with the dynamic threshold and stayed at 365 MB with 128 KB. Set inside the
    worker (the environment variable MALLOC_MMAP_THRESHOLD_ is only read when a process starts).
    """
    global _fixed_threshold
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        _LIBC.mallopt(M_MMAP_THRESHOLD, int(nbytes))
        _fixed_threshold = int(nbytes)


def raise_mmap_threshold_for_serving(nbytes=SERVING_MMAP_THRESHOLD):
    """After a model has loaded, in a process that fixed its threshold: raise it to ``nbytes``.

    The low threshold is what keeps loading's big transient buffers (the model file's bytes) off
    the heap; while serving, it maps every array over 128 KB afresh, and the page faults cost time.
    Measured on a 2 MP request on ONNX Runtime: 82k page faults with 128 KB, 44k with 4 MB after
    loading, for 7 MB more at the 12 MP peak. A process that never fixed one is left alone.
    """
    if _fixed_threshold is not None and _fixed_threshold < nbytes:
        set_mmap_threshold(nbytes)
