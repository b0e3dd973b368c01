"""The numbers a Korean turn says, for checking that an answer's numbers are the user's, not the model's.

The small tuned model writes numbers of its own: a fact `[생일: 31일]` for "내 생일 기억나?", a reply "3월 14일이면
3월 24일이야" (services.llm_memory.task.ground_fact, services.llm_message.task.ground_reply). A user says numbers
in digits, in Korean number words and by naming a day, and all three count.
"""

from __future__ import annotations

import re

from ohlora.llm.task import Reject

# Numbers a user says in words: native Korean tens (with or without a unit after them) and units, and the dates of
# named days. "스물여섯" says 26 and "크리스마스" says 12 and 25, so `[나이: 26살]` and `[생일: 12월 25일]` are grounded.
KOREAN_TENS = {"열": 10, "스물": 20, "스무": 20, "서른": 30, "마흔": 40, "쉰": 50, "예순": 60, "일흔": 70, "여든": 80, "아흔": 90}
KOREAN_UNITS = {"하나": 1, "한": 1, "둘": 2, "두": 2, "셋": 3, "세": 3, "넷": 4, "네": 4, "다섯": 5, "여섯": 6, "일곱": 7,
                "여덟": 8, "아홉": 9}
NAMED_DAYS = {"크리스마스": (12, 25, 24), "어린이날": (5,), "새해": (1,), "설날": (1,), "광복절": (8, 15), "한글날": (10, 9)}
_TENS = "|".join(sorted(KOREAN_TENS, key=len, reverse=True))
_UNITS = "|".join(sorted(KOREAN_UNITS, key=len, reverse=True))
SPOKEN_NUMBER = re.compile(rf"({_TENS})?({_UNITS})?")


def said_numbers(text: str) -> set[int]:
    """Every number the text says, in digits or in Korean words (generous: "한강" says 1, which only lets more pass)."""
    numbers = numbers_in(text)
    for match in SPOKEN_NUMBER.finditer(text):
        tens, unit = match.groups()
        if tens or unit:
            numbers.add(KOREAN_TENS.get(tens or "", 0) + KOREAN_UNITS.get(unit or "", 0))
    for day, said in NAMED_DAYS.items():
        if day in text:
            numbers.update(said)
    return numbers


def numbers_in(text: str) -> set[int]:
    """The numbers written in digits."""
    return {int(n) for n in re.findall(r"\d+", text)}


# A number that makes a date or an age: N월, N일, N년, N살 (not 30분, 9시, 16부작: durations and times a reply may
# suggest of its own, as the dataset's replies do).
DATE_NUMBER = re.compile(r"(\d+)\s*(?:월|일|년|살)")


def date_numbers_in(text: str) -> set[int]:
    return {int(n) for n in DATE_NUMBER.findall(text)}


# Attempts on which an answer with a number nobody said is retried; after them the task decides (a fact counts as
# nothing, a reply stands). More retries would each cost a whole answer's decoding on the turn's path.
UNSAID_RETRIES = 1


def said_or_retry(numbers: set[int], said: set[int], attempt: int, what: str) -> bool:
    """True when every number is one that was said; else Reject (a retry) on the first attempts, then False."""
    if numbers <= said:
        return True
    if attempt <= UNSAID_RETRIES:
        raise Reject(f"{what} nobody said: {sorted(numbers - said)}")
    return False
