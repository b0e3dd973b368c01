"""An adapter's calibration: the threshold its task's opening is decided by (ohlora.llm.task.Opening).

It lives in the adapter's folder as `calibration.json`, next to `training-report.json`, because it belongs to those
weights: `ohlora train-calibrate` measures it on rows the adapter was not trained on, under the base, merged
adapter and output vocabulary it is served with, and records them. The engine reads `opening` and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class CalibratedOpening:
    text: str  # the opening token's text ("[")
    threshold: float  # the model's probability of it at or above which the answer opens with it


def read_opening(adapter: str) -> CalibratedOpening | None:
    """The adapter folder's calibrated opening, or None (no file, or a hub id: such an adapter samples its opening)."""
    path = Path(adapter) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        opening = json.loads(path.read_text(encoding="utf-8"))["opening"]
        return CalibratedOpening(text=str(opening["text"]), threshold=float(opening["threshold"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a calibration file (needs opening.text and opening.threshold): {exc}") from exc
