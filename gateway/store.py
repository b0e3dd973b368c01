"""The Redis store: memories (+ cached vectors), summary, turn log, face choice, per-user locks.

Every multi-key change is one Lua script or one MULTI transaction, so a crash never
leaves half a step behind. Keys come from gateway.keys only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Generic, TypeVar

import grpc
import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.keys import SCHEMA_VERSION, Keys
from ohlora.errors import OhloraError
from services.llm_memory.task import Fact


class StoreError(OhloraError):
    code = grpc.StatusCode.UNAVAILABLE


class Busy(OhloraError):
    code = grpc.StatusCode.ABORTED


def squash(text: str) -> str:
    """The original's de-duplication key: the text with all spaces removed."""
    return text.replace(" ", "")


@dataclass(frozen=True)
class MemoryRecord:
    id: str
    key: str
    value: str
    text: str
    created: float
    turn: str = ""
    source: str = "added"  # extracted | added | imported


# Adds a memory unless its space-less text exists; with replace=1 first drops memories with the
# same space-less key (a new value supersedes the old one). Returns {added, replaced ids...}.
ADD_MEMORY = """
local memories, vectors = KEYS[1], KEYS[2]
local id, record, text, key, replace, vector = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local all = redis.call('HGETALL', memories)
local same_key = {}
for i = 1, #all, 2 do
  local other = cjson.decode(all[i + 1])
  if string.gsub(other['text'], ' ', '') == text then return {0} end
  if replace == '1' and string.gsub(other['key'], ' ', '') == key then table.insert(same_key, all[i]) end
end
for _, old in ipairs(same_key) do
  redis.call('HDEL', memories, old)
  redis.call('HDEL', vectors, old)
end
redis.call('HSET', memories, id, record)
if vector ~= '' then redis.call('HSET', vectors, id, vector) end
local out = {1}
for _, old in ipairs(same_key) do table.insert(out, old) end
return out
"""

# The ids of every memory of a user, as one JSON array: recall takes the texts of the ids it has seen from
# this process's memo (TextMemo), so it no longer has Redis decode every record on every turn.
MEMORY_IDS = """
local ids = redis.call('HKEYS', KEYS[1])
if #ids == 0 then return '[]' end
return cjson.encode(ids)
"""

# The id and text of each memory in ARGV that still exists, as two JSON arrays. Decoding the records here and
# sending two strings back costs a fraction of sending the records and parsing each in Python (about 3 ms
# against 15 ms for 1,000 memories; `ohlora bench recall`).
MEMORY_TEXTS = """
local ids, texts = {}, {}
for _, id in ipairs(ARGV) do
  local record = redis.call('HGET', KEYS[1], id)
  if record then
    ids[#ids + 1] = id
    texts[#texts + 1] = cjson.decode(record)['text']
  end
end
if #ids == 0 then return {'[]', '[]'} end
return {cjson.encode(ids), cjson.encode(texts)}
"""

# Releases a lock only if we still own it.
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


REDIS_RETRIES = 8
VectorKey = tuple[str, str, str]  # (user, embedder, memory id)
K = TypeVar("K")
V = TypeVar("V")


class LruMemo(Generic[K, V]):
    """Values by key within a size budget, least recently used out first; a value larger than the budget is not
    kept (a budget of 0 turns the memo off). `size` says what a value counts against the budget."""

    def __init__(self, budget: int, size: Callable[[V], int]) -> None:
        self.budget = budget
        self.size = size
        self._used = 0
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if self.size(value) > self.budget:
            return
        old = self._entries.pop(key, None)
        self._used += self.size(value) - (self.size(old) if old is not None else 0)
        self._entries[key] = value
        while self._used > self.budget:
            _, dropped = self._entries.popitem(last=False)
            self._used -= self.size(dropped)

    def __len__(self) -> int:
        return len(self._entries)


class VectorMemo(LruMemo[VectorKey, np.ndarray]):
    """Memory vectors this process has already read from or written to Redis, least recently used out first.

    It needs no invalidation: a memory id is new for every stored text and its vector is written once
    per embedder, so an entry can go unused (its memory was forgotten) but never stale. It saves
    reading every vector of a user from Redis on every turn (1.5 MB for 1,000 e5-small vectors, about
    10 ms of reply parsing). Only a vector cache emptied by hand in Redis, for an embedder replaced under
    the same name, outlives its Redis copy here until the gateway restarts.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes, lambda vector: vector.nbytes)


VECTOR_MEMO_BYTES = 64 << 20


class TextMemo(LruMemo[tuple[str, str], str]):
    """Memory texts this process has already read from Redis, by (user, memory id), least recently used out first.

    Like VectorMemo it needs no invalidation: a memory id is new for every stored text, so an entry can go
    unused (its memory was forgotten) but never stale. With it, recall asks Redis only for the ids of a user's
    memories and the texts of ids it has not seen. For 1,000 memories, Redis decoding every record and the
    gateway parsing every text took about 5 ms a turn. That work ran beside the query's embedding on the
    same CPU and slowed it (docs/benchmarks.md, recall).
    """

    def __init__(self, max_entries: int) -> None:
        super().__init__(max_entries, lambda _: 1)


# Texts kept in the memo: as many memories as the vector memo holds (about 20 MB of Python strings).
TEXT_MEMO_ENTRIES = 50_000


class RedisStore:
    def __init__(self, client: aioredis.Redis, keys: Keys, turn_log_length: int = 1000,
                 vector_memo_bytes: int = VECTOR_MEMO_BYTES, text_memo_entries: int = TEXT_MEMO_ENTRIES) -> None:
        self.redis = client
        self.keys = keys
        self.turn_log_length = turn_log_length
        self.vector_memo = VectorMemo(vector_memo_bytes)
        self.text_memo = TextMemo(text_memo_entries)
        self._add = client.register_script(ADD_MEMORY)
        self._memory_ids = client.register_script(MEMORY_IDS)
        self._memory_texts = client.register_script(MEMORY_TEXTS)
        self._release = client.register_script(RELEASE_LOCK)
        self._renew = client.register_script(RENEW_LOCK)

    @classmethod
    def connect(cls, url: str, prefix: str = "ohlora", turn_log_length: int = 1000,
                vector_memo_bytes: int = VECTOR_MEMO_BYTES, text_memo_entries: int = TEXT_MEMO_ENTRIES) -> "RedisStore":
        # A restarting Redis (AOF reload) is ridden through: each command retries on a dropped or refused
        # connection for about 5.5 s (0.1 + 0.2 + 0.4 + 0.8 + 4 x 1 s), reconnecting by itself; a longer outage
        # reaches the caller as UNAVAILABLE (ohlora.errors.status_for).
        client = aioredis.from_url(
            url, decode_responses=False, health_check_interval=10, socket_connect_timeout=5, socket_timeout=10,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=REDIS_RETRIES),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        return cls(client, Keys(prefix), turn_log_length, vector_memo_bytes, text_memo_entries)

    async def close(self) -> None:
        await self.redis.aclose()

    async def check_schema(self) -> None:
        """Records the schema version on first use; refuses a store written by another version."""
        await self.redis.set(self.keys.schema(), SCHEMA_VERSION, nx=True)
        found = (await self.redis.get(self.keys.schema())).decode()
        if found != SCHEMA_VERSION:
            raise StoreError(f"Redis holds schema version {found}; this gateway writes version {SCHEMA_VERSION}")

    # ------------------------------------------------------------------ memories
    async def list_memories(self, uid: str) -> list[MemoryRecord]:
        raw = await self.redis.hgetall(self.keys.memories(uid))
        records = [MemoryRecord(**json.loads(v)) for v in raw.values()]
        return sorted(records, key=lambda r: (r.created, r.id))

    async def memory_texts(self, uid: str) -> dict[str, str]:
        """Memory id -> text, in no particular order: all that recall reads of the records.

        The ids come from Redis (MEMORY_IDS); each text from this process's memo (TextMemo), else from Redis
        (MEMORY_TEXTS), then remembered. An id forgotten between the two reads is left out.
        """
        key = self.keys.memories(uid)
        texts = {i: self.text_memo.get((uid, i)) for i in json.loads(await self._memory_ids(keys=[key]))}
        if missing := [i for i, t in texts.items() if t is None]:
            ids, found = await self._memory_texts(keys=[key], args=missing)
            for i, text in zip(json.loads(ids), json.loads(found), strict=True):
                texts[i] = text
                self.text_memo.put((uid, i), text)
        return {i: t for i, t in texts.items() if t is not None}

    async def add_memory(
        self,
        uid: str,
        fact: Fact,
        source: str,
        turn: str = "",
        replace_same_key: bool = False,
        vector: np.ndarray | None = None,
        embedder: str = "",
    ) -> tuple[MemoryRecord | None, list[str]]:
        """Adds a fact; returns the record (None if an equal memory exists) and the ids it replaced."""
        record = MemoryRecord(uuid.uuid4().hex[:12], fact.key, fact.value, fact.text, time.time(), turn, source)
        vectors_key = self.keys.memory_vectors(uid, embedder or "-")
        blob = vector.astype(np.float32).tobytes() if vector is not None else b""
        result = await self._add(
            keys=[self.keys.memories(uid), vectors_key],
            args=[record.id, json.dumps(asdict(record), ensure_ascii=False), squash(fact.text), squash(fact.key),
                  "1" if replace_same_key else "0", blob],
        )
        if not result[0]:
            return None, []
        return record, [r.decode() for r in result[1:]]

    async def count_memories(self, uid: str) -> int:
        return int(await self.redis.hlen(self.keys.memories(uid)))

    async def forget(self, uid: str, memory_id: str) -> bool:
        return bool(await self.redis.hdel(self.keys.memories(uid), memory_id))

    async def vectors(self, uid: str, embedder: str) -> dict[str, np.ndarray]:
        raw = await self.redis.hgetall(self.keys.memory_vectors(uid, embedder))
        return {k.decode(): np.frombuffer(v, dtype=np.float32) for k, v in raw.items()}

    async def vectors_for(self, uid: str, embedder: str, ids: list[str]) -> list[np.ndarray | None]:
        """The cached vector of each id (None where there is none yet), from this process's memo where it
        has one, else from Redis in one HMGET; what Redis gives is remembered (VectorMemo)."""
        found = [self.vector_memo.get((uid, embedder, i)) for i in ids]
        absent = [n for n, v in enumerate(found) if v is None]
        if absent:
            blobs = await self.redis.hmget(self.keys.memory_vectors(uid, embedder), [ids[n] for n in absent])
            for n, blob in zip(absent, blobs):
                if blob is not None:
                    found[n] = np.frombuffer(blob, dtype=np.float32)
                    self.vector_memo.put((uid, embedder, ids[n]), found[n])
        return found

    async def save_vectors(self, uid: str, embedder: str, vectors: dict[str, np.ndarray]) -> None:
        if vectors:
            mapping = {k: v.astype(np.float32).tobytes() for k, v in vectors.items()}
            await self.redis.hset(self.keys.memory_vectors(uid, embedder), mapping=mapping)  # type: ignore[arg-type]
            for k, blob in mapping.items():
                self.vector_memo.put((uid, embedder, k), np.frombuffer(blob, dtype=np.float32))

    # ------------------------------------------------------------------ summary, face
    async def summary(self, uid: str) -> str:
        value = await self.redis.get(self.keys.summary(uid))
        return value.decode() if value else ""

    async def set_summary(self, uid: str, summary: str | None) -> None:
        """None or '' resets it, as the original does after a failed summary."""
        if summary:
            await self.redis.set(self.keys.summary(uid), summary)
        else:
            await self.redis.delete(self.keys.summary(uid))

    async def face(self, uid: str) -> int | None:
        value = await self.redis.get(self.keys.face(uid))
        return int(value) if value is not None else None

    async def set_face(self, uid: str, face_id: int) -> None:
        await self.redis.set(self.keys.face(uid), face_id)

    # ------------------------------------------------------------------ turn log
    async def start_turn(self, uid: str, turn_id: str, user_text: str) -> None:
        await self.redis.xadd(
            self.keys.turns(uid),
            {"turn": turn_id, "phase": "start", "data": json.dumps({"user_text": user_text, "started": time.time()}, ensure_ascii=False)},
            maxlen=self.turn_log_length * 2,
            approximate=True,
        )

    async def end_turn(self, uid: str, turn_id: str, outcome: dict) -> None:
        outcome = {**outcome, "ended": time.time()}
        await self.redis.xadd(
            self.keys.turns(uid),
            {"turn": turn_id, "phase": "end", "data": json.dumps(outcome, ensure_ascii=False)},
            maxlen=self.turn_log_length * 2,
            approximate=True,
        )

    async def turns(self, uid: str, limit: int = 50) -> list[dict]:
        """Newest last; a turn with a start and no end is reported with status 'incomplete'."""
        entries = await self.redis.xrevrange(self.keys.turns(uid), count=limit * 2 + 2)
        merged: dict[str, dict] = {}
        order: list[str] = []
        for _, fields in reversed(entries):
            turn_id = fields[b"turn"].decode()
            data = json.loads(fields[b"data"])
            if turn_id not in merged:
                merged[turn_id] = {"turn_id": turn_id, "status": "incomplete"}
                order.append(turn_id)
            merged[turn_id].update(data)
        return [merged[t] for t in order][-limit:]

    # ------------------------------------------------------------------ per-user lock
    @contextlib.asynccontextmanager
    async def user_lock(self, uid: str, wait_seconds: float, ttl_seconds: float = 30.0) -> AsyncIterator[None]:
        """Serialises a user's turns across gateway replicas; renewed while held, expires if we die."""
        token = uuid.uuid4().hex
        key = self.keys.lock(uid)
        ttl_ms = int(ttl_seconds * 1000)
        deadline = time.monotonic() + wait_seconds
        while not await self.redis.set(key, token, nx=True, px=ttl_ms):
            if time.monotonic() > deadline:
                raise Busy(f"your previous turn is still being processed after {wait_seconds:.0f} s; try again shortly")
            await asyncio.sleep(0.05)

        async def renew() -> None:
            while True:
                await asyncio.sleep(ttl_seconds / 3)
                await self._renew(keys=[key], args=[token, ttl_ms])

        renewer = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewer.cancel()
            await self._release(keys=[key], args=[token])

    # ------------------------------------------------------------------ gesture events
    async def publish_gesture(self, uid: str, expression: tuple[float, float, float]) -> None:
        await self.redis.publish(self.keys.events(uid), json.dumps({"gesture": expression}))

    @contextlib.asynccontextmanager
    async def gesture_events(self, uid: str) -> AsyncIterator[aioredis.client.PubSub]:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.keys.events(uid))
        try:
            yield pubsub
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()
