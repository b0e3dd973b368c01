"""Request validation shared by the LLM servicers: every bad field gets a readable message."""

from __future__ import annotations

from ohlora.errors import InvalidInput


def require_text(value: str, field: str, max_chars: int) -> str:
    """Non-blank text of at most max_chars characters, without NUL characters."""
    if not value or not value.strip():
        raise InvalidInput(f"{field} is empty; send the text to process")
    if len(value) > max_chars:
        raise InvalidInput(f"{field} is {len(value)} characters long; the limit is {max_chars}")
    if "\x00" in value:
        raise InvalidInput(f"{field} contains a NUL character")
    return value
