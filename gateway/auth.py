"""Bearer tokens mapped to users (DESIGN.md §8), stored hashed in Redis.

A token is 32 random bytes (url-safe base64) with an `ohl_` prefix. Redis keeps only its
sha256: a token has far more entropy than a password, so one unsalted fast hash is enough
to make a stolen Redis dump useless for logging in. Operators manage tokens with
`ohlora tokens create|list|revoke`, which talk to Redis directly: the gateway is the public
endpoint and offers no way to mint tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from dataclasses import asdict, dataclass

import grpc
import redis.asyncio as aioredis

from gateway.keys import Keys
from ohlora.errors import InvalidInput, Unauthenticated

TOKEN_PREFIX = "ohl_"
USER_KEY = "x-ohlora-user"
AUTH_KEY = "authorization"
USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
DEFAULT_USER = "local"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_user_id(uid: str) -> str:
    if not USER_ID.match(uid):
        raise InvalidInput(f"user id {uid!r} must be 1-64 letters, digits or . _ - @")
    return uid


@dataclass(frozen=True)
class TokenRecord:
    id: str  # short public handle for list/revoke; not a secret
    user: str
    label: str
    created: float
    hash: str


class TokenStore:
    """Create, look up, list and revoke tokens in one Redis hash (gateway.keys.Keys.tokens)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    async def create(self, user: str, label: str = "") -> tuple[str, TokenRecord]:
        """Returns (the token, shown once and never stored; its record)."""
        token = new_token()
        record = TokenRecord(uuid.uuid4().hex[:8], check_user_id(user), label, time.time(), token_hash(token))
        await self.redis.hset(self.keys.tokens(), record.hash, json.dumps(asdict(record)))
        return token, record

    async def lookup(self, token: str) -> TokenRecord | None:
        digest = token_hash(token)
        raw = await self.redis.hget(self.keys.tokens(), digest)
        if raw is None:
            return None
        record = TokenRecord(**json.loads(raw))
        return record if hmac.compare_digest(record.hash, digest) else None

    async def list(self) -> list[TokenRecord]:
        raw = await self.redis.hgetall(self.keys.tokens())
        return sorted((TokenRecord(**json.loads(v)) for v in raw.values()), key=lambda r: (r.created, r.id))

    async def revoke(self, token_id: str | None = None, user: str | None = None) -> int:
        """Revokes one token by id, or every token of a user; returns how many went."""
        gone = [r.hash for r in await self.list() if (token_id and r.id == token_id) or (user and r.user == user)]
        return int(await self.redis.hdel(self.keys.tokens(), *gone)) if gone else 0


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode("utf-8", "replace")
    return None


class Authenticator:
    """Who is calling. Auth off: the x-ohlora-user header (trusted network). Auth on: the bearer token's user only."""

    def __init__(self, required: bool, tokens: TokenStore) -> None:
        self.required = required
        self.tokens = tokens

    async def user(self, context: grpc.aio.ServicerContext) -> str:
        if not self.required:
            return check_user_id(_metadata(context, USER_KEY) or DEFAULT_USER)
        header = _metadata(context, AUTH_KEY)
        if not header:
            raise Unauthenticated(
                "this gateway requires a bearer token: pass --token or set OHLORA_TOKEN "
                "(an operator creates one with `ohlora tokens create --user NAME`)"
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization header must be 'Bearer <token>'")
        record = await self.tokens.lookup(token.strip())
        if record is None:
            raise Unauthenticated("the token is not valid (unknown or revoked); ask the operator for a new one")
        return record.user
