"""Every bench record says what it ran on: CPU capability, cores, torch, dtype (and any CPU caps)."""

from __future__ import annotations

import json
import os

import torch

import ohlora.bench as bench
from ohlora.bench import SuiteResult, run_suite
from ohlora.runtime.device import choose_dtype


def test_a_suite_record_names_the_machine_and_the_resolved_dtype(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    result = SuiteResult(columns=["x"], rows=[[1.0]], results={"figure": 2.0}, dtype="auto")
    monkeypatch.setattr(bench, "suite_function", lambda name: lambda quick: result)
    run_suite("llm-batching", quick=True, out_dir=tmp_path)
    record = json.loads((tmp_path / "llm-batching.json").read_text())
    machine = record["machine"]
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["cores"] == os.cpu_count() and machine["torch"] == torch.__version__
    assert machine["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert machine["dtype"] == "float32", "auto under an AVX2 cap of oneDNN is fp32 on any CPU"
    assert machine["dtype"] == choose_dtype("auto", torch.device("cpu")).name
    printed = capsys.readouterr().out
    assert f"machine: {machine['cpu_capability']} kernels, ONEDNN_MAX_CPU_ISA=AVX2" in printed
    assert "RESULT figure=2" in printed


def test_a_suite_without_models_records_no_dtype(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "suite_function", lambda name: lambda quick: SuiteResult(["x"], [], {}))
    run_suite("face", quick=True, out_dir=tmp_path)
    machine = json.loads((tmp_path / "face.json").read_text())["machine"]
    assert "dtype" not in machine and machine["cores"] == os.cpu_count()
