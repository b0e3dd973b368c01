"""The per-user token bucket and the token store on a real redis-server."""

from __future__ import annotations

import asyncio

import pytest

from gateway.auth import TokenStore, token_hash
from gateway.limits import Bucket, RateLimiter
from ohlora.errors import InvalidInput, LimitExceeded


async def test_bucket_allows_a_burst_then_refills_at_the_rate(store):
    limiter = RateLimiter(store.redis, store.keys, [Bucket("turn", 600.0, 2, "chat turns")])  # 10 per second
    await limiter.take("u", "turn")
    await limiter.take("u", "turn")
    with pytest.raises(LimitExceeded, match=r"at most 600 chat turns per minute \(bursts of 2\).*retry in 0\.1 s"):
        await limiter.take("u", "turn")
    await limiter.take("v", "turn")  # per user
    await asyncio.sleep(0.15)
    await limiter.take("u", "turn")
    ttl = await store.redis.pttl(store.keys.rate("u", "turn"))
    assert 0 < ttl <= 1300, "the bucket expires once it would be full again"


async def test_a_zero_rate_turns_the_limit_off(store):
    limiter = RateLimiter(store.redis, store.keys, [Bucket("call", 0, 1, "requests")])
    for _ in range(5):
        await limiter.take("u", "call")
    assert not await store.redis.exists(store.keys.rate("u", "call"))


async def test_tokens_look_up_to_their_user_until_revoked(store):
    tokens = TokenStore(store.redis, store.keys)
    token, record = await tokens.create("alice", "phone")
    other, _ = await tokens.create("alice", "laptop")
    assert (await tokens.lookup(token)).user == "alice" and record.hash == token_hash(token)
    assert await tokens.lookup(token + "x") is None and await tokens.lookup("") is None
    assert await tokens.revoke(token_id=record.id) == 1
    assert await tokens.lookup(token) is None and (await tokens.lookup(other)).user == "alice"
    assert await tokens.revoke(user="alice") == 1 and await tokens.list() == []
    with pytest.raises(InvalidInput):
        await tokens.create("bad user!")
