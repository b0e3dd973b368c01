"""The face timeline: the original's gesture curve, idle walk bounds and blink rules."""

from __future__ import annotations

import random

import pytest

from gateway.animation import BASE, WALK, Animator, gesture_curve


def test_gesture_curve_has_the_original_shape():
    curve = gesture_curve()
    assert len(curve) == 70
    assert [round(v, 3) for v in curve[:3]] == [0.0, 0.003, 0.011]
    assert curve[30:41] == [1.0] * 11, "10 held frames plus the first of the ease-out: about 11 at the target"
    assert round(curve[-1], 3) == 0.003
    assert all(a <= b for a, b in zip(curve[:40], curve[1:40])) and all(a >= b for a, b in zip(curve[40:], curve[41:]))


def test_answer_eases_to_the_target_and_back():
    animator = Animator(rng=random.Random(0), started=0.0)
    animator.current = list(BASE)
    target = (-1.0, -1.3, -1.5)
    animator.answer(target, now=0.0)
    frames = [animator.next_frame(now=i * 0.05) for i in range(70)]
    peak = frames[35]
    assert peak == pytest.approx(target)
    assert frames[0] == pytest.approx(BASE, abs=1e-2) and frames[-1] == pytest.approx(BASE)


def test_idle_walk_stays_in_the_original_bounds():
    animator = Animator(rng=random.Random(1), started=0.0)
    for i in range(3000):
        animator.next_frame(now=0.0)  # no blinks at t=0
        for value, (_, low, high) in zip(animator.current, WALK):
            assert low <= value <= high


def test_blinks_wait_for_five_seconds_after_an_answer_and_one_second_apart():
    animator = Animator(rng=random.Random(2), started=0.0)
    blinks = []
    for i in range(6000):  # 10 minutes at 10 frames/s
        now = i / 10
        if now == 60.0:
            animator.answer((0.0, 0.0, 0.0), now)
        before = len(animator.queues[0])
        eyes = animator.next_frame(now)[0]
        if len(animator.queues[0]) > max(0, before - 1):
            blinks.append(now)
        assert eyes <= 1.5 * 0.8 + 1e-9
    assert len(blinks) > 20
    assert all(not (0 <= b < 5.0) and not (60.0 <= b < 65.0) for b in blinks)
    assert all(b - a >= 1.0 for a, b in zip(blinks, blinks[1:]))
