"""The Redis store on a real redis-server: de-duplication, the same-key rule, turn log, locks."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway.memory_file import format_memory_file, parse_memory_file
from gateway.store import Busy, RedisStore
from services.llm_memory.task import Fact


def fact(text: str) -> Fact:
    key, value = text[1:-1].split(": ")
    return Fact(key, value, text)


async def test_duplicates_ignore_spaces(store):
    first, _ = await store.add_memory("u", fact("[오늘 날씨: 맑음]"), "added")
    again, _ = await store.add_memory("u", Fact("오늘날씨", "맑 음", "[오늘날씨: 맑 음]"), "added")
    assert first is not None and again is None
    assert [m.text for m in await store.list_memories("u")] == ["[오늘 날씨: 맑음]"]


async def test_extracted_value_replaces_the_same_key_and_its_vector(store):
    old, _ = await store.add_memory("u", fact("[오늘 날씨: 맑음]"), "extracted", vector=np.ones(4), embedder="e")
    await store.add_memory("u", fact("[좋아하는 꽃: 백합]"), "extracted", vector=np.zeros(4), embedder="e")
    new, replaced = await store.add_memory(
        "u", fact("[오늘 날씨: 비]"), "extracted", replace_same_key=True, vector=np.full(4, 2.0), embedder="e"
    )
    assert replaced == [old.id]
    texts = [m.text for m in await store.list_memories("u")]
    assert texts == ["[좋아하는 꽃: 백합]", "[오늘 날씨: 비]"]
    vectors = await store.vectors("u", "e")
    assert old.id not in vectors and vectors[new.id].tolist() == [2.0] * 4


async def test_imported_files_keep_both_values_like_the_original(store):
    content = "[오늘 날씨: 맑음]\n[오늘 날씨: 비]\n"
    facts, skipped = parse_memory_file(content + "이건 기억이 아님\n\n")
    assert skipped == ["이건 기억이 아님"]
    for f in facts:
        await store.add_memory("u", f, "imported")
    assert format_memory_file([m.text for m in await store.list_memories("u")]) == content


async def test_turn_log_marks_unfinished_turns(store):
    await store.start_turn("u", "t1", "안녕")
    await store.end_turn("u", "t1", {"status": "ok", "reply": " 안녕!"})
    await store.start_turn("u", "t2", "뭐 해?")
    log = await store.turns("u")
    assert [(t["turn_id"], t["status"]) for t in log] == [("t1", "ok"), ("t2", "incomplete")]
    assert log[0]["user_text"] == "안녕" and log[0]["reply"] == " 안녕!"


async def test_user_lock_serialises_across_replicas(store, redis_server):
    replica = RedisStore.connect(redis_server.url, prefix=store.keys.prefix)
    order: list[str] = []

    async def turn(s: RedisStore, name: str, hold: float) -> None:
        async with s.user_lock("u", wait_seconds=5):
            order.append(f"{name}-start")
            await asyncio.sleep(hold)
            order.append(f"{name}-end")

    await asyncio.gather(turn(store, "a", 0.3), turn(replica, "b", 0.0))
    assert order in (["a-start", "a-end", "b-start", "b-end"], ["b-start", "b-end", "a-start", "a-end"])
    async with store.user_lock("u", wait_seconds=1):
        with pytest.raises(Busy, match="previous turn"):
            async with replica.user_lock("u", wait_seconds=0.2):
                pass
    async with replica.user_lock("other", wait_seconds=0.2):
        pass  # other users are not blocked
    await replica.close()


async def test_a_dead_holder_lock_expires(store):
    await store.redis.set(store.keys.lock("u"), "crashed-replica", px=200)
    async with store.user_lock("u", wait_seconds=2):
        pass


async def test_schema_version_mismatch_is_refused(store):
    await store.redis.set(store.keys.schema(), "99")
    with pytest.raises(Exception, match="schema version 99"):
        await store.check_schema()
