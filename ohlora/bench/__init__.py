"""`ohlora bench <suite>`: side-by-side measurements in one run (ratios count; times are context).

Every suite prints a table, writes bench-results/<suite>.json, and ends with one
`RESULT <name>=<number>` line per figure.
"""

from __future__ import annotations

import importlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SuiteResult:
    """What a suite measured: table rows for people, results for scripts."""

    columns: list[str]
    rows: list[list[object]]
    results: dict[str, float]
    notes: list[str] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)
    # The dtype the suite's models ran in, as configured ("auto" is resolved in the record); None: no model ran.
    dtype: str | None = None


# Suite name -> "module:function" (imported only when that suite runs).
_SUITES = {
    "llm-batching": "ohlora.bench.llm:llm_batching",
    "llm-consolidated": "ohlora.bench.llm:consolidated",
    "llm-mixed-adapters": "ohlora.bench.llm:mixed_adapters",
    "llm-int8": "ohlora.bench.llm:llm_int8",
    "llm-vocabulary": "ohlora.bench.llm:llm_vocabulary",
    "face": "ohlora.bench.face:face",
    "gateway-overhead": "ohlora.bench.gateway:gateway_overhead",
    "critical-path": "ohlora.bench.gateway:critical_path",
    "web-overhead": "ohlora.bench.web:web_overhead",
    "mini-quality": "ohlora.bench.mini:mini_quality",
    "mini-timing": "ohlora.bench.mini:mini_timing",
    "mini-expression": "ohlora.bench.mini:mini_expression",
    "load": "ohlora.bench.load:load",
    "recall": "ohlora.bench.recall:recall",
}
SUITES = tuple(_SUITES)


def suite_function(name: str) -> Callable[[bool], SuiteResult]:
    module, function = _SUITES[name].split(":")
    return getattr(importlib.import_module(module), function)


# Environment caps that make a newer CPU behave like an older one; recorded whenever set.
CPU_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def bench_dtype() -> str:
    """The dtype suites load their LLMs in: `ohlora bench --dtype` (OHLORA_BENCH_DTYPE), else auto."""
    import os

    return os.environ.get("OHLORA_BENCH_DTYPE") or "auto"


def machine_info(dtype: str | None = None) -> dict[str, object]:
    """What a figure was measured on, so two figures from different machines are never compared blind.

    `dtype` is the one the suite's models ran in ("auto" is resolved for the CPU, with its reason).
    """
    import os

    import torch

    from ohlora.runtime.device import choose_dtype, cpu_capability

    info: dict[str, object] = {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": cpu_capability(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    for var in CPU_CAPS:
        if os.environ.get(var):
            info[var] = os.environ[var]
    if dtype is not None:
        choice = choose_dtype(dtype, torch.device("cpu"))
        info["dtype"] = choice.name
        info["dtype_reason"] = choice.reason
    return info


def machine_note(info: dict[str, object]) -> str:
    caps = "".join(f", {k}={info[k]}" for k in CPU_CAPS if k in info)
    dtype = f", dtype {info['dtype']} ({info['dtype_reason']})" if "dtype" in info else ""
    return (f"machine: {info['cpu_capability']} kernels{caps}, {info['cores']} cores, {info['torch_threads']} torch "
            f"threads, torch {info['torch']}{dtype}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a small sample; nan when there is none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def side_by_side(measure: str, result: str, first: tuple[str, list[float]], second: tuple[str, list[float]],
                 notes: list[str], label: str = "path") -> SuiteResult:
    """Two ways of doing the same thing, measured in one run: a row each (count, median, p90) and
    `result` = median of the first / median of the second."""
    rows = [[label, len(values), statistics.median(values), percentile(values, 0.9)] for label, values in (first, second)]
    return SuiteResult(columns=[label, "turns", measure, "p90 s"], rows=rows,
                       results={result: rows[0][2] / rows[1][2]}, notes=notes)


def format_table(columns: list[str], rows: list[list[object]]) -> str:
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def run_suite(name: str, quick: bool, out_dir: Path) -> SuiteResult:
    started = time.time()
    result = suite_function(name)(quick)
    # A suite that ran models says in which dtype (SuiteResult.dtype); the others still say which machine.
    machine = machine_info(result.dtype)
    result.notes.append(machine_note(machine))
    print()
    print(format_table(result.columns, result.rows))
    for note in result.notes:
        print(f"note: {note}")
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "suite": name,
        "quick": quick,
        "started": started,
        "seconds": round(time.time() - started, 1),
        "machine": machine,
        "columns": result.columns,
        "rows": result.rows,
        "results": result.results,
        "notes": result.notes,
        "details": result.details,
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str))
    print(f"wrote {path}")
    for key, value in result.results.items():
        print(f"RESULT {key}={value:.4g}")
    return result
