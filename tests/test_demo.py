"""The README's run command (`make run` → `ohlora demo`) works on a fresh machine: the whole pipeline answers."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_the_whole_pipeline(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ohlora.cli", "demo", "--preset", "tiny", "--models", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert out.count("👱‍♀️ 오로라 : ") == 2
    assert "turn log: final input '[상태: 시험 준비] 로라야 나 떨려'" in out
    assert "a face frame: " in out
