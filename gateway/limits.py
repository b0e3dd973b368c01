"""Per-user rate limits, shared by every gateway replica (token buckets in Redis).

A bucket holds up to `burst` calls and refills at `per_minute` / 60 per second; a call
takes one or is refused with RESOURCE_EXHAUSTED and how long to wait. The clock is
Redis's (TIME), so replicas on hosts with skewed clocks agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.keys import Keys
from ohlora.errors import LimitExceeded

RATE_LIMIT_PREFIX = "rate limit:"  # how a refusal's message starts, so clients (the web tier) can tell it from size limits
_RETRY_IN = re.compile(r"retry in (\d+(?:\.\d+)?) s")


def retry_after(message: str) -> float | None:
    """Seconds until a refused caller may retry, read from a rate-limit message; None for any other message."""
    match = _RETRY_IN.search(message) if message.startswith(RATE_LIMIT_PREFIX) else None
    return float(match.group(1)) if match else None


# KEYS[1] bucket; ARGV rate per second, burst. Returns {1, 0} or {0, ms until one token is back}.
TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + (now - at) * rate / 1000)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
if allowed == 1 then return {1, 0} end
return {0, math.ceil((1 - tokens) / rate * 1000)}
"""


@dataclass(frozen=True)
class Bucket:
    name: str  # "turn" or "call"
    per_minute: float
    burst: int
    what: str  # for the message: "chat turns", "requests"


class RateLimiter:
    def __init__(self, client: aioredis.Redis, keys: Keys, buckets: list[Bucket]) -> None:
        self.keys = keys
        self.buckets = {b.name: b for b in buckets}
        self._take = client.register_script(TAKE)

    async def take(self, uid: str, bucket: str) -> None:
        b = self.buckets[bucket]
        if b.per_minute <= 0:
            return  # 0 turns the limit off
        allowed, wait_ms = await self._take(keys=[self.keys.rate(uid, b.name)], args=[b.per_minute / 60.0, b.burst])
        if not int(allowed):
            raise LimitExceeded(
                f"{RATE_LIMIT_PREFIX} at most {b.per_minute:g} {b.what} per minute (bursts of {b.burst}) per user; "
                f"retry in {int(wait_ms) / 1000:.1f} s"
            )
