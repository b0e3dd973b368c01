"""Calibrates the memory task's opening bias on the mini preset: how often a fact is written, by bias.

    python scripts/memory_bias.py                      # the table, for the biases below
    python scripts/memory_bias.py --biases 0,1,2,3     # others

The memory adapter decides at its first answer token whether a turn has something to remember ("[") or not
("없음"); a small model learns the commoner answer first (docs/training.md). `[llm.tasks.memory] opening_bias`
adds a logit to "[" at that step: a decision threshold. It is chosen here, on a calibration set of its own
(ohlora/train/data/memory_calibration.json: 40 turns that state a fact, 40 that do not, written for this and kept
apart from the persona dataset and the scenarios), not on the bench's valid split. Each bias runs the memory task
as the preset serves it (seeded sampling, the preset's dtype) on all 80 turns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CALIBRATION_JSON = REPO_ROOT / "ohlora" / "train" / "data" / "memory_calibration.json"


async def rates(biases: list[float]) -> list[tuple[float, float, float, float]]:
    """(bias, facts written on fact turns, facts with the calibration key, nothing written on the other turns)."""
    from ohlora.bench.mini import load_engine
    from ohlora.config import load_settings
    from ohlora.llm.persona import MEMORY_KEYS
    from ohlora.llm.task import complete_task
    from ohlora.presets import preset_config
    from ohlora.train.dataset import task_spec

    data = json.loads(CALIBRATION_JSON.read_text(encoding="utf-8"))
    settings = load_settings(preset_config("mini"))
    engine = load_engine(settings)
    engine.start()
    spec, dialect = task_spec("memory"), settings.llm.dialect_of("memory")
    adapter = "memory" if engine.has_adapter("memory") else None
    out = []
    try:
        for bias in biases:
            generator = engine.for_adapter(adapter, opening_bias={"[": bias} if bias else None)
            facts = await asyncio.gather(*(complete_task(generator, spec, dialect, final_input=t) for t, _ in data["fact"]))
            nones = await asyncio.gather(*(complete_task(generator, spec, dialect, final_input=t) for t in data["none"]))
            written = [f.value for f in facts]
            out.append((bias,
                        sum(v is not None and v.key in MEMORY_KEYS for v in written) / len(written),
                        sum(v is not None and f"[{v.key}:" in want for v, (_, want) in zip(written, data["fact"])) / len(written),
                        sum(n.value is None and not n.stats.fallback for n in nones) / len(nones)))
            print(f"bias {bias:+.2f}: fact {out[-1][1]:.3f} (same key {out[-1][2]:.3f}), nothing {out[-1][3]:.3f}", flush=True)
    finally:
        await engine.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--biases", default="0,0.5,1,1.5,2,2.5,3", help="comma-separated logit biases for '['")
    args = parser.parse_args()
    from ohlora.bench import machine_info

    print(machine_info())
    asyncio.run(rates([float(b) for b in args.biases.split(",")]))


if __name__ == "__main__":
    main()
