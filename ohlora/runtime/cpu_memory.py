"""Keep freed tensor memory in the process heap when models run on the CPU.

By default glibc hands every block over 32 MiB straight back to the kernel when it is
freed, and non-main threads (gRPC workers) get capped per-thread heaps that cannot
hold such blocks at all. A model on the CPU frees and re-allocates activations of
that size in every layer, so each operation paid for fresh zeroed pages: with 16
StyleGAN frames at 256² that cost more than the convolutions (536 → 309 ms per frame
once memory is kept), and a Qwen2.5-0.5B prefill of 922 tokens ran ~15 % slower.
Measured with `ohlora bench face` and docs/benchmarks.md.

The price: the process keeps its peak heap size instead of returning it; for a model
server that reaches the same peak on every request, that is what we want. CUDA
memory is untouched (PyTorch already caches it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

# mallopt parameters from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
LARGEST = 2**31 - 1  # mallopt takes an int
# While a model loads (loading_models): blocks from this size up are mmapped and handed back when freed.
LOADING_MMAP_THRESHOLD = 1 << 20
_kept = False  # keep_freed_memory() took effect in this process


def _mallopt() -> Callable[[int, int], int] | None:
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return mallopt


def keep_freed_memory() -> bool:
    """Applies the heap settings; True when they took effect (glibc only, else a no-op).

    Call it before the process starts threads: the one-arena setting only binds threads
    that have not allocated yet. OHLORA_KEEP_FREED_MEMORY=0 turns it off (to compare, or to
    have memory returned between requests).
    """
    global _kept
    if os.environ.get("OHLORA_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if (mallopt := _mallopt()) is None:
        return False
    applied = all(mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, LARGEST),  # big blocks come from the heap, not fresh mmaps
        (M_TRIM_THRESHOLD, LARGEST),  # and stay there when freed
        (M_ARENA_MAX, 1),  # one heap for all threads, so worker threads reuse it too
    ))
    if not applied:
        log.warning("could not keep freed memory in the heap (mallopt refused); CPU models run slower")
    _kept = applied
    return applied


@contextmanager
def loading_models() -> Iterator[None]:
    """While models load: big blocks are mmapped and go back to the kernel when freed; after: the heap is kept
    again (where keep_freed_memory() had kept it) and its free pages handed back once.

    A load makes many large temporary copies (an adapter merged, the output layer cut, each layer's int8 copy made
    from a float32 one) of ever different sizes; kept in the heap they fragment it. Serving mini's 1.5B reply
    model, a process that loads in 5.9 GB when left alone held 9.1 and 14.8 GB beside other processes' loads
    (Qwen2.5-Coder-1.5B, bf16, int8-decode: 4.7 GB of live data), and the machine ran out of memory.
    """
    mallopt = _mallopt() if _kept else None
    if mallopt is None:
        yield
        return
    mallopt(M_MMAP_THRESHOLD, LOADING_MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, LOADING_MMAP_THRESHOLD)
    try:
        yield
    finally:
        mallopt(M_MMAP_THRESHOLD, LARGEST)
        mallopt(M_TRIM_THRESHOLD, LARGEST)
        release_freed_memory()


def release_freed_memory() -> bool:
    """Hands the heap's free pages back to the kernel once (glibc's malloc_trim); True when any went back.

    For after a load whose temporary copies would otherwise stay resident: keep_freed_memory() keeps the
    heap at its peak, which suits the activations every request allocates again, not a one-time peak.
    Loading the embedder's ONNX graph peaks at about twice its weights (e5-small: 1.1 GB kept, 0.56 GB used).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        return False
    trim.argtypes = [ctypes.c_size_t]
    return bool(trim(0))


def keep_freed_memory_if_on_cpu(*device_names: str) -> bool:
    """keep_freed_memory() when any of the process's configured devices is the CPU."""
    from ohlora.runtime.device import resolve_device

    def on_cpu(name: str) -> bool:
        try:
            return resolve_device(name).type == "cpu"
        except (ValueError, RuntimeError):  # a bad device name is reported by the model load, with context
            return False

    return any(on_cpu(name) for name in device_names) and keep_freed_memory()
