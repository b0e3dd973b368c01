"""`ohlora bench <suite>`: side-by-side measurements in one run (ratios count; times are context).

Every suite prints a table, writes bench-results/<suite>.json, and ends with one
`RESULT <name>=<number>` line per figure.
"""

from __future__ import annotations

import json
import platform
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


def _suites() -> dict[str, Callable[[bool], SuiteResult]]:
    from ohlora.bench.face import face
    from ohlora.bench.gateway import critical_path, gateway_overhead
    from ohlora.bench.llm import consolidated, llm_batching
    from ohlora.bench.mini import mini_quality, mini_timing
    from ohlora.bench.load import load

    return {
        "llm-batching": llm_batching,
        "llm-consolidated": consolidated,
        "face": face,
        "gateway-overhead": gateway_overhead,
        "critical-path": critical_path,
        "mini-quality": mini_quality,
        "mini-timing": mini_timing,
        "load": load,
    }


SUITES = ("llm-batching", "llm-consolidated", "face", "gateway-overhead", "critical-path", "mini-quality", "mini-timing",
          "load")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a small sample; nan when there is none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def format_table(columns: list[str], rows: list[list[object]]) -> str:
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def run_suite(name: str, quick: bool, out_dir: Path) -> SuiteResult:
    started = time.time()
    result = _suites()[name](quick)
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
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
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
