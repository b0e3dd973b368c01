"""Validation and cleaning of what users send, before anything is stored or reaches a model.

Three rules, each with a reason:
- Terminal control: escape sequences (CSI, OSC, ...) and other control or format characters
  are removed, so no text that the gateway stores or returns can drive a terminal. ZWJ/ZWNJ
  stay (emoji sequences such as 👱‍♀️ need them); tab and line breaks become spaces.
- Prompt structure: the original's prompt markers ("(사용자 질문)", "(답변 종료)", ...) are
  refused in user text, since a model would read them as structure; square brackets in a chat
  message reach the model as parentheses, so only the gateway can put a recalled "[key: value]"
  in front of a question (the turn log keeps the text as typed).
- Size: over-long text is RESOURCE_EXHAUSTED with the limit in the message; empty text (after
  cleaning) is INVALID_ARGUMENT. Nothing is stored before these checks pass.
"""

from __future__ import annotations

import re
import unicodedata

from gateway.memory_file import parse_line
from ohlora.errors import InvalidInput, LimitExceeded
from services.llm_memory.task import Fact

# ESC-introduced sequences: CSI (ESC [ ... final), OSC / DCS / APC / PM / SOS (ESC ] ... BEL or ST), two-byte ESC x.
ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b[\]P_^X][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-Z\\-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]"
)
KEEP_FORMAT = {"\u200c", "\u200d"}  # ZWNJ, ZWJ: parts of emoji and of some scripts
SPACE_LIKE = {"\t", "\n", "\r", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"}
PROMPT_MARKERS = ("(사용자 질문)", "(오로라 답변 요약)", "(오로라 답변)", "(답변 시작)", "(답변 종료)")
_COMPACT_MARKERS = tuple(m.replace(" ", "") for m in PROMPT_MARKERS)


def strip_terminal_control(text: str) -> str:
    """The text without escape sequences and without control/format characters (see module doc)."""
    text = ESCAPE_SEQUENCE.sub("", text)
    out = []
    for ch in text:
        if ch in SPACE_LIKE:
            out.append(" ")
        elif ch in KEEP_FORMAT or unicodedata.category(ch) not in ("Cc", "Cf", "Cs"):
            out.append(ch)
    return "".join(out)


def has_terminal_control(text: str) -> bool:
    return strip_terminal_control(text) != text.translate({ord(c): " " for c in SPACE_LIKE})


def prompt_marker_in(text: str) -> str | None:
    """The first prompt marker found, ignoring spaces and bracket style ("[사용자질문]" counts)."""
    compact = text.replace(" ", "").replace("[", "(").replace("]", ")")
    for marker, plain in zip(PROMPT_MARKERS, _COMPACT_MARKERS):
        if plain in compact:
            return marker
    return None


def chat_text(text: str, max_chars: int) -> str:
    """A chat message ready for the turn: cleaned, checked; raises with a message the user can act on."""
    if len(text) > max_chars:
        raise LimitExceeded(f"the message is {len(text)} characters long; the limit is {max_chars}")
    cleaned = strip_terminal_control(text).strip()
    if not cleaned:
        raise InvalidInput("the message is empty; type something to say to Oh-LoRA")
    marker = prompt_marker_in(cleaned)
    if marker:
        raise InvalidInput(f"the message contains {marker}, a marker of Oh-LoRA's prompt format; please leave it out")
    return cleaned


def model_text(text: str) -> str:
    """What the model sees of a user's chat text: square brackets as parentheses (no fake recalled memory)."""
    return text.replace("[", "(").replace("]", ")")


def memory_fact(text: str, max_chars: int) -> Fact:
    """One memory typed by a user ("[key: value]"), or raises: too long, control characters, not a memory."""
    if len(text) > max_chars:
        raise LimitExceeded(f"the memory is {len(text)} characters long; the limit is {max_chars}")
    if has_terminal_control(text.strip()):
        raise InvalidInput("the memory contains control characters or terminal escape sequences; type plain text")
    fact = parse_line(text.strip())
    if fact is None or fact.text.replace(" ", "") != text.strip().replace(" ", ""):
        # The original's normaliser keeps the first [...] of a model's answer; a person's memory must be
        # exactly one "[key: value]", so nothing they typed is silently dropped.
        raise InvalidInput(f"{text!r} is not a memory; write it as [key: value]")
    if prompt_marker_in(fact.text):
        raise InvalidInput("the memory contains a marker of Oh-LoRA's prompt format; please leave it out")
    return fact


def memory_file_facts(content: str, max_chars: int) -> tuple[list[Fact], int]:
    """(facts to import, lines skipped): lines that are not clean, short memories are skipped, never imported."""
    facts, skipped = [], 0
    for line in content.splitlines():
        if not line.strip():
            continue
        try:
            facts.append(memory_fact(line, max_chars))
        except (InvalidInput, LimitExceeded):
            skipped += 1
    return facts, skipped
