"""Thirty Korean turns written for the `mini-quality` bench (not taken from the original's data).

Each is tagged with its kind, and with whether it tells a fact about the user worth remembering,
so the bench can say how often a fact is extracted where there is one (context, not a target).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    text: str
    kind: str  # greeting, plan, feeling, fact, question
    has_fact: bool


PROMPTS: tuple[Prompt, ...] = (
    Prompt("로라야 안녕! 오늘 하루 어땠어?", "greeting", False),
    Prompt("좋은 아침이야 로라야", "greeting", False),
    Prompt("오랜만이야, 잘 지냈어?", "greeting", False),
    Prompt("로라야 나 왔어", "greeting", False),
    Prompt("안녕 오로라, 반가워", "greeting", False),
    Prompt("나 내일 친구랑 부산 여행 가", "plan", True),
    Prompt("이번 주말에 영화 보러 갈 거야", "plan", True),
    Prompt("다음 달에 토익 시험 봐", "plan", True),
    Prompt("오늘 저녁에 헬스장 가려고", "plan", True),
    Prompt("내일 면접이 있어", "plan", True),
    Prompt("나 요즘 너무 피곤해", "feeling", True),
    Prompt("오늘 시험 망쳐서 속상해", "feeling", True),
    Prompt("드디어 프로젝트 끝나서 너무 행복해!", "feeling", True),
    Prompt("로라야 나 좀 외로워", "feeling", True),
    Prompt("비 와서 기분이 좀 우울하네", "feeling", True),
    Prompt("나는 고양이 두 마리 키워", "fact", True),
    Prompt("내가 제일 좋아하는 음식은 떡볶이야", "fact", True),
    Prompt("나 서울에 살아", "fact", True),
    Prompt("내 생일은 3월 14일이야", "fact", True),
    Prompt("나 요즘 기타 배우고 있어", "fact", True),
    Prompt("로라야 너는 MBTI가 뭐야?", "question", False),
    Prompt("너 몇 살이야?", "question", False),
    Prompt("로라는 무슨 공부해?", "question", False),
    Prompt("너 제일 친한 친구가 누구야?", "question", False),
    Prompt("로라야 좋아하는 계절이 뭐야?", "question", False),
    Prompt("주말에 뭐 하면 좋을까?", "question", False),
    Prompt("로라야 점심 뭐 먹을지 추천해 줘", "question", False),
    Prompt("스트레스 풀 때 뭐 해?", "question", False),
    Prompt("너는 꿈이 뭐야?", "question", False),
    Prompt("로라야 나 오늘 칭찬 좀 해 줘", "question", False),
)
