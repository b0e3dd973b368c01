"""Every Redis key the gateway uses, built in one place (DESIGN.md §5)."""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class Keys:
    prefix: str = "ohlora"

    def schema(self) -> str:
        return f"{self.prefix}:schema"

    def tokens(self) -> str:
        """Hash: sha256(token) hex -> JSON {id, user, label, created}. Tokens themselves are never stored."""
        return f"{self.prefix}:tokens"

    def rate(self, uid: str, bucket: str) -> str:
        """Hash {tokens, at}: one per-user token bucket ("turn" or "call"), expiring when full again."""
        return f"{self._user(uid)}:rate:{bucket}"

    def _user(self, uid: str) -> str:
        return f"{self.prefix}:user:{uid}"

    def memories(self, uid: str) -> str:
        """Hash: memory id -> JSON {key, value, text, created, turn, source}."""
        return f"{self._user(uid)}:memories"

    def memory_vectors(self, uid: str, embedder: str) -> str:
        """Hash: memory id -> float32 bytes, per embedder (a cache, rebuilt when the embedder changes)."""
        return f"{self._user(uid)}:memvec:{embedder}"

    def summary(self, uid: str) -> str:
        return f"{self._user(uid)}:summary"

    def turns(self, uid: str) -> str:
        """Stream of turn records: a 'start' entry when a turn begins, an 'end' entry with its outcome."""
        return f"{self._user(uid)}:turns"

    def face(self, uid: str) -> str:
        return f"{self._user(uid)}:face"

    def lock(self, uid: str) -> str:
        """Per-user turn lock, shared by every gateway replica."""
        return f"{self._user(uid)}:lock"

    def events(self, uid: str) -> str:
        """Pub/sub channel: gestures for the user's Watch streams on any replica."""
        return f"{self._user(uid)}:events"
