"""The original's memory file format: one "[key: value]" per line, UTF-8, newline at the end."""

from __future__ import annotations

from ohlora.llm.task import Reject
from services.llm_memory.task import Fact, checked_memory_fixed_point, to_fact


def parse_line(line: str) -> Fact | None:
    """A valid "[key: value]" line as a Fact; None for a line that is not one (blank, malformed)."""
    line = line.rstrip("\r\n")
    if len(line.replace(" ", "")) < 3:  # the original's retrieval skips such lines too
        return None
    try:
        return to_fact(checked_memory_fixed_point(line))  # a fixed point: an exported file imports to the same memories
    except Reject:
        return None


def parse_memory_file(content: str) -> tuple[list[Fact], list[str]]:
    """(facts in file order, lines that were not memories)."""
    facts, skipped = [], []
    for line in content.splitlines():
        fact = parse_line(line)
        if fact is None:
            if line.strip():
                skipped.append(line)
        else:
            facts.append(fact)
    return facts, skipped


def format_memory_file(texts: list[str]) -> str:
    return "".join(f"{t}\n" for t in texts)
