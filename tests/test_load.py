"""Load with tiny models: several users at once, several turns each, through one gateway — no lost turn,
no cross-user leak, no error, no deadlock (the same check as `ohlora bench load`, smaller)."""

from __future__ import annotations

from ohlora.bench.load import run_load


def test_concurrent_users_lose_nothing_and_never_see_each_other(shared_stack):
    report = run_load(shared_stack.main.address, users=6, turns=3, timeout=300)
    assert report.problems == []
    assert (report.lost_turns, report.leaks, report.errors) == (0, 0, 0)
    assert len(report.settled_s) == 18 and len(report.visible_s) == 18
