"""The prepared GPU-figures script runs (here on the CPU with small shapes), so a session with a GPU can trust it."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT


def test_gpu_figures_script_smoke(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "gpu_figures.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in ("single_tokens_per_s", "single_time_to_first_token_ms", "batched8_tokens_per_s",
                "face_float32_one_per_call_fps", "face_float32_batch70_fps"):
        assert figures[key] > 0, key
