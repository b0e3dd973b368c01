"""keep_freed_memory(): freed big blocks stay in the heap, also for worker threads (checked in fresh processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import sys, threading
import numpy as np
from ohlora.runtime.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep":
    print(keep_freed_memory())

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

def work(out):
    block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
    before = rss_mb()
    del block
    out.append(before - rss_mb())  # what freeing gave back to the kernel

released = []
thread = threading.Thread(target=work, args=(released,))  # like a gRPC worker
thread.start(); thread.join()
print(round(released[0]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc heap settings (Linux only)")
@pytest.mark.parametrize("mode,switch,kept", [("default", "1", False), ("keep", "1", True), ("keep", "0", False)],
                         ids=["not-called", "called", "called-but-switched-off"])
def test_freed_blocks_stay_in_the_heap_only_when_asked(mode, switch, kept):
    env = {**os.environ, "OHLORA_KEEP_FREED_MEMORY": switch}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env).stdout.split()
    released = int(out[-1])
    if mode == "keep":
        assert out[0] == str(kept), "keep_freed_memory() must say whether it took effect"
    if kept:
        assert released < 20, f"{released} MiB went back to the kernel although the heap should keep it"
    else:
        assert released > 150, f"only {released} MiB released by default: the probe no longer shows the difference"


RELEASE_PROBE = """
import numpy as np
from ohlora.runtime.cpu_memory import keep_freed_memory, release_freed_memory

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

keep_freed_memory()
block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched, then freed into the kept heap (a load's temporary copy)
del block
kept = rss_mb()
print(release_freed_memory(), round(kept - rss_mb()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc heap settings (Linux only)")
def test_release_hands_a_kept_peak_back_once():
    out = subprocess.run([sys.executable, "-c", RELEASE_PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, "OHLORA_KEEP_FREED_MEMORY": "1"}).stdout.split()
    assert out[0] == "True" and int(out[1]) > 150, out


LOADING_PROBE = """
import threading
import numpy as np
from ohlora.runtime.cpu_memory import keep_freed_memory, loading_models

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

def freed_back():
    # Blocks of many sizes, as a load's temporary copies: what freeing them gave back to the kernel.
    blocks = [np.ones((40 + 7 * i) * 2**20 // 8) for i in range(5)]
    before = rss_mb()
    del blocks
    return round(before - rss_mb())

keep_freed_memory()
with loading_models():
    out = []
    thread = threading.Thread(target=lambda: out.append(freed_back()))  # the engine loads in a worker thread
    thread.start(); thread.join()
print(out[0], freed_back())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc heap settings (Linux only)")
def test_a_loads_temporary_copies_go_back_and_the_heap_is_kept_again_after():
    out = subprocess.run([sys.executable, "-c", LOADING_PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, "OHLORA_KEEP_FREED_MEMORY": "1"}).stdout.split()
    while_loading, after = int(out[0]), int(out[1])
    assert while_loading > 200, f"only {while_loading} of 270 MiB went back while loading"
    assert after < 20, f"{after} MiB went back after the load, although the heap should keep it again"
