"""The README's run command (`make run` → `ohlora demo`, the mini preset) works: the whole pipeline answers in Korean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ohlora.bench.mini import hangul_share


# On a fresh machine this run also prepares the preset (the 1.5B's conversion among it): more than the usual limit.
@pytest.mark.timeout(900)
def test_demo_runs_the_whole_pipeline_on_mini():
    done = subprocess.run([sys.executable, "-m", "ohlora.cli", "demo"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    replies = [line.split("👱‍♀️ 오로라 : ", 1)[1] for line in out.splitlines() if "👱‍♀️ 오로라 : " in line]
    assert len(replies) == 2 and all(hangul_share(r) >= 0.6 for r in replies), replies
    assert out.count("  face : eyes ") == 2
    assert out.count("turn log: final input ") == 2
    frame = Path(out.split("a face frame: ")[1].split()[0])
    assert frame.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
