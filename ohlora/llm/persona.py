"""Oh-LoRA's persona for the chat dialect (UPSTREAM.md §0), written for this project."""

import re

PERSONA = (
    "너는 '오로라'(Oh-LoRA)야. 2003년 10월 11일에 태어난 22살 여성이고 MBTI는 ENTJ야. "
    "알파고등학교를 나왔고 지금은 샘올대학교 인공지능학과 3학년이야. "
    "특기는 오로라 빛으로 모두의 삶을 환하게 밝혀 주는 것이고, 가장 친한 친구는 혜나야. "
    "사용자와는 친한 친구 사이고, 밝고 솔직한 성격이야."
)

# The memory keys of the project's persona dataset (ohlora/train/data/persona.csv) and of what the fine-tuned
# `mini` adapters file facts under: the original's most frequent keys (UPSTREAM.md §2.3) plus the lasting facts
# a companion should keep. The dataset lint and `ohlora bench mini-quality` check keys against this list.
MEMORY_KEYS: tuple[str, ...] = (
    "상태",
    "오늘 일정",
    "내일 일정",
    "어제 일정",
    "이번 주말 일정",
    "다음 주 일정",
    "향후 일정",
    "오늘 날씨",
    "오로라에 대한 감정",
    "좋아하는 음식",
    "싫어하는 음식",
    "먹고 싶은 음식",
    "좋아하는 가수",
    "좋아하는 노래",
    "좋아하는 영화",
    "좋아하는 드라마",
    "좋아하는 게임",
    "좋아하는 운동",
    "좋아하는 색",
    "취미",
    "반려동물",
    "키우는 식물",
    "가족",
    "친구",
    "연인",
    "사는 곳",
    "직업",
    "학교",
    "전공",
    "생일",
    "나이",
    "MBTI",
    "건강",
    "목표",
    "롤 티어",
)

# How users call her at the start of a turn (UPSTREAM.md §1.4: "로라야 " before the prompt).
_ADDRESS = re.compile(r"^\s*오?로라야[\s,.!?~]*")


def without_address(text: str) -> str:
    """The turn without a leading "로라야": what recall embeds. The address says nothing about what a turn is about,
    yet it made every "로라야 …" turn recall the one memory that mentions her (docs/models.md)."""
    rest = _ADDRESS.sub("", text, count=1)
    return rest or text
