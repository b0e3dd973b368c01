"""Oh-LoRA's face timeline, per watching session (UPSTREAM.md §5.6, the original's constants).

Idle: the three weights random-walk around (0.2, 1.0, 0.0). Blinks: at most one per second,
only 5 s after an answer, probability 0.025 per frame. Answer: a 70-frame gesture
(30 frames cosine ease in, 10 held, 30 ease out) towards the expression. Queued values are
taken from the end, as the original does, so a blink shows at once even mid-gesture.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

BASE = (0.2, 1.0, 0.0)  # eyes, mouth, pose at rest
WALK = ((0.035, -0.05, 0.45), (0.025, 0.85, 1.15), (0.045, -0.4, 0.4))  # step, low, high
BLINK_PROBABILITY = 0.025
BLINK_AFTER_ANSWER_S = 5.0
BLINK_GAP_S = 1.0
BLINK_PATTERNS = ((0.4, (0.4, 0.6, 0.8, 0.8, 0.6, 0.4)), (0.3, (0.4, 0.6, 0.8, 0.6, 0.4)), (0.3, (0.4, 0.7, 0.7, 0.4)))
EASE_FRAMES, HOLD_FRAMES = 30, 10


def gesture_curve() -> list[float]:
    """70 values: 0 → 1 in 30 cosine steps, 10 × 1, 1 → 0 in 30 cosine steps."""
    ease_in = [(1 - math.cos(math.pi * i / EASE_FRAMES)) / 2 for i in range(EASE_FRAMES)]
    ease_out = [(1 + math.cos(math.pi * i / EASE_FRAMES)) / 2 for i in range(EASE_FRAMES)]
    return ease_in + [1.0] * HOLD_FRAMES + ease_out


@dataclass
class Animator:
    rng: random.Random = field(default_factory=random.Random)
    started: float = 0.0
    current: list[float] = field(default_factory=lambda: list(BASE))
    queues: tuple[list[float], list[float], list[float]] = field(default_factory=lambda: ([], [], []))
    last_answer: float = 0.0
    last_blink: float = float("-inf")

    def __post_init__(self) -> None:
        self.last_answer = self.started

    def answer(self, target: tuple[float, float, float], now: float) -> None:
        """Queues the 70-frame gesture from the current idle face to `target` and back."""
        curve = gesture_curve()
        for i, queue in enumerate(self.queues):
            queue.extend(self.current[i] + (target[i] - self.current[i]) * c for c in curve)
        self.last_answer = now

    def next_frame(self, now: float) -> tuple[float, float, float]:
        """Weights of the next frame at time `now` (seconds, any monotonic clock)."""
        values = tuple(q.pop() if q else self.current[i] for i, q in enumerate(self.queues))
        for i, (step, low, high) in enumerate(WALK):
            self.current[i] = min(high, max(low, self.current[i] + self.rng.uniform(-step, step)))
        if (
            now - self.last_answer >= BLINK_AFTER_ANSWER_S
            and now - self.last_blink >= BLINK_GAP_S
            and self.rng.random() < BLINK_PROBABILITY
        ):
            magnitude = 1.1 + 0.4 * self.rng.random()
            pattern = self.rng.choices([p for _, p in BLINK_PATTERNS], weights=[w for w, _ in BLINK_PATTERNS])[0]
            self.queues[0].extend(v * magnitude for v in pattern)
            self.last_blink = now
        return values  # type: ignore[return-value]
