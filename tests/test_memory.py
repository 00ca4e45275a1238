"""The worker's malloc settings: a low mmap threshold while the model loads, a higher one to serve."""
import subprocess
import sys
import textwrap

import pytest

# Run in a fresh interpreter: mallopt settings last for the life of the process.
PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from app import memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = MallInfo2

    def mapped(nbytes):
        before = libc.mallinfo2().hblks
        block = libc.malloc(nbytes)
        count = libc.mallinfo2().hblks - before
        libc.free(block)
        return count

    if sys.argv[1] == "worker":
        memory.set_mmap_threshold(131072)
        print(mapped(1 << 20))
        memory.raise_mmap_threshold_for_serving()
        print(mapped(1 << 20))
    else:
        memory.raise_mmap_threshold_for_serving()
        # glibc's dynamic threshold, still on: freeing a mapped 24 MB block raises it past 6 MB
        # (a fixed 4 MB threshold would map the 6 MB block).
        print(mapped(24 << 20))
        print(mapped(6 << 20))
    """
)


def mapped_counts(kind):
    out = subprocess.run([sys.executable, "-c", PROBE, kind], capture_output=True, text=True, check=True)
    return [int(line) for line in out.stdout.split()]


def test_a_worker_maps_big_blocks_while_loading_and_reuses_the_heap_once_serving():
    if not hasattr(__import__("ctypes").CDLL(None), "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    assert mapped_counts("worker") == [1, 0]


def test_a_process_that_fixed_no_threshold_is_left_alone():
    if not hasattr(__import__("ctypes").CDLL(None), "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    assert mapped_counts("plain") == [1, 0]


def test_the_registry_raises_the_threshold_once_an_engine_is_built(monkeypatch):
    from app import engines
    from conftest import FakeEngine

    raised = []
    monkeypatch.setattr(engines, "raise_mmap_threshold_for_serving", lambda: raised.append(True))
    registry = engines.EngineRegistry({"MODEL": "maskrcnn"}, factory=lambda name, config: FakeEngine(), allowed=("maskrcnn",))
    registry.get()
    registry.get()
    assert raised == [True]
