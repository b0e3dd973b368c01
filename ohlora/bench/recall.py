"""recall: finding the memory for a turn among 1,000 stored for one user, as the gateway does it vs as the original did.

The original Oh-LoRA encoded every memory line again with its sentence embedder on every turn, then took
the top-1 cosine at or above a threshold. The gateway embeds only the user's text (one Embed call, kind
"query") and scores it against memory vectors cached in Redis and in its own memo (TurnRunner.recall,
gateway.store). Both run here for real: a redis-server, the memory service as its own process
(`ohlora serve llm_memory`) with the mini preset's Korean embedder (multilingual-e5-small), 1,000 Korean
memories stored for one user through gateway.store, and the ways alternated turn by turn on the same
texts. The first gateway recall embeds every memory once to fill the cache; that one-time cost is a row
of its own, not part of the figures.

Figures: `recall_p95_ms` (the gateway's recall, p95) and `recall_speedup` (the original's median ÷ the
gateway's median). Context: both p50s, the gateway's recall on a replica that has not served the user yet
(memo empty: every vector read from Redis), and the query Embed call alone (the floor under all of them).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gateway.downstream import Downstream
from gateway.store import RedisStore, squash
from gateway.recall import best_memory
from gateway.turn import TurnRunner
from ohlora.bench import SuiteResult, percentile
from ohlora.client import ServiceProcessHandle, free_port
from ohlora.config import GatewaySettings, load_settings
from ohlora.llm.persona import without_address
from ohlora.redis_server import RedisServer
from ohlora.v1 import llm_pb2, llm_pb2_grpc
from services.llm_memory.task import Fact

MEMORIES = 1000
USER = "recall-bench"
# The original's way costs seconds a turn on a CPU, so it runs every ORIGINAL_EVERY-th round only.
ORIGINAL_EVERY = 5
# Deadline for the original's calls, which embed hundreds of texts each.
ORIGINAL_DEADLINE_S = 600.0

# Whose fact it is: the user (no owner, as the original's memories read) and the people in their life.
OWNERS = [
    "", "엄마", "아빠", "언니", "오빠", "남동생", "여동생", "할머니", "할아버지", "이모",
    "삼촌", "사촌 동생", "남자친구", "친구 민지", "친구 준호", "친구 서연", "친구 지훈", "룸메이트", "팀장님", "회사 동기",
]
# What the fact is about, and values it can take.
ATTRIBUTES: dict[str, list[str]] = {
    "좋아하는 음식": ["떡볶이", "김치찌개", "비빔밥", "초밥", "마라탕", "삼겹살", "냉면", "짜장면"],
    "싫어하는 음식": ["오이", "가지", "고수", "번데기", "당근", "피망", "굴", "순대"],
    "좋아하는 과일": ["딸기", "복숭아", "수박", "귤", "망고", "포도", "사과", "체리"],
    "좋아하는 음료": ["아이스 아메리카노", "바닐라 라떼", "녹차", "콜라", "버블티", "식혜", "오렌지 주스", "밀크티"],
    "좋아하는 디저트": ["마카롱", "티라미수", "붕어빵", "호떡", "빙수", "치즈케이크", "약과", "크로플"],
    "생일": ["1월 3일", "2월 14일", "3월 21일", "5월 5일", "7월 19일", "8월 30일", "10월 9일", "12월 25일"],
    "취미": ["등산", "독서", "게임", "요리", "뜨개질", "사진 찍기", "자전거 타기", "보드게임"],
    "좋아하는 색": ["하늘색", "보라색", "검은색", "연두색", "분홍색", "노란색", "남색", "흰색"],
    "좋아하는 가수": ["아이유", "뉴진스", "BTS", "성시경", "에스파", "태연", "데이식스", "임영웅"],
    "좋아하는 영화": ["기생충", "인사이드 아웃", "어바웃 타임", "인터스텔라", "범죄도시", "라라랜드", "극한직업", "해리 포터"],
    "좋아하는 드라마": ["도깨비", "응답하라 1988", "이상한 변호사 우영우", "슬기로운 의사생활", "나의 아저씨", "무빙"],
    "좋아하는 계절": ["봄", "여름", "가을", "겨울"],
    "좋아하는 운동": ["수영", "테니스", "요가", "클라이밍", "배드민턴", "러닝", "필라테스", "축구"],
    "응원하는 야구팀": ["LG 트윈스", "두산 베어스", "KIA 타이거즈", "롯데 자이언츠", "삼성 라이온즈", "한화 이글스"],
    "사는 동네": ["망원동", "성수동", "연남동", "해운대", "분당", "일산", "송도", "전주 한옥마을 근처"],
    "고향": ["부산", "대구", "광주", "제주도", "강릉", "청주", "여수", "춘천"],
    "직업": ["간호사", "개발자", "초등학교 선생님", "디자이너", "요리사", "회계사", "대학원생", "공무원"],
    "전공": ["컴퓨터공학", "경영학", "국어국문학", "화학", "심리학", "건축학", "간호학", "산업디자인"],
    "반려동물": ["강아지 초코", "고양이 나비", "햄스터 콩이", "앵무새 하늘이", "강아지 몽이", "고양이 치즈"],
    "알레르기": ["땅콩", "복숭아", "고양이 털", "꽃가루", "새우", "우유"],
    "무서워하는 것": ["벌레", "높은 곳", "귀신 이야기", "치과", "천둥", "깜깜한 곳"],
    "요즘 고민": ["취업 준비", "이사 문제", "다이어트", "잠이 안 옴", "시험 공부", "월세 인상"],
    "요즘 빠진 것": ["필름 카메라", "러닝 크루", "베이킹", "식물 키우기", "보컬 레슨", "퍼즐 맞추기"],
    "주말 계획": ["캠핑 가기", "전시회 보기", "본가 가기", "대청소", "맛집 탐방", "늦잠 자기"],
    "다음 여행지": ["오사카", "제주도", "다낭", "파리", "강릉", "방콕", "뉴욕", "경주"],
    "가 보고 싶은 곳": ["아이슬란드", "스위스", "몽골 초원", "하와이", "교토", "울릉도"],
    "좋아하는 책": ["어린 왕자", "데미안", "불편한 편의점", "달러구트 꿈 백화점", "채식주의자", "해리 포터"],
    "좋아하는 꽃": ["백합", "튤립", "해바라기", "벚꽃", "안개꽃", "장미"],
    "좋아하는 동물": ["수달", "판다", "펭귄", "고양이", "강아지", "토끼"],
    "혈액형": ["A형", "B형", "O형", "AB형"],
    "MBTI": ["ENTJ", "INFP", "ISTJ", "ENFP", "INTJ", "ESFJ"],
    "별명": ["곰돌이", "다람쥐", "먹보", "잠꾸러기", "똑순이", "햇살이"],
    "즐겨 보는 유튜브": ["요리 채널", "여행 브이로그", "게임 방송", "운동 채널", "공부 브이로그", "강아지 채널"],
    "출근 방법": ["지하철 2호선", "버스", "자전거", "자가용", "도보", "광역버스"],
    "아침 메뉴": ["토스트", "시리얼", "누룽지", "그릭 요거트", "김밥", "아침 안 먹음"],
    "잠자는 시간": ["밤 11시", "새벽 1시", "새벽 2시", "밤 10시", "자정"],
    "자주 가는 카페": ["동네 스타벅스", "회사 앞 카페", "학교 앞 빵집", "한강 편의점", "도서관 매점"],
    "배우는 악기": ["피아노", "기타", "우쿨렐레", "드럼", "바이올린", "플루트"],
    "배우는 언어": ["일본어", "스페인어", "영어 회화", "중국어", "프랑스어", "독일어"],
    "다음 시험": ["토익", "정보처리기사", "운전면허 필기", "한국사 검정", "기말고사", "자격증 실기"],
    "최근 산 물건": ["무선 이어폰", "러닝화", "전기 포트", "겨울 코트", "태블릿", "캠핑 의자"],
    "갖고 싶은 선물": ["향수", "꽃다발", "손편지", "스마트워치", "커플 반지", "책 한 권"],
    "기념일": ["3월 2일", "6월 15일", "9월 1일", "11월 11일", "4월 20일", "1월 28일"],
    "아픈 곳": ["허리", "손목", "무릎", "목", "눈", "위"],
    "쓰는 휴대폰": ["아이폰", "갤럭시", "폴더블 폰", "오래된 안드로이드"],
    "잘하는 요리": ["김치볶음밥", "된장찌개", "파스타", "계란말이", "불고기", "카레"],
    "좋아하는 날씨": ["비 오는 날", "맑은 날", "눈 오는 날", "선선한 날", "흐린 날"],
    "싫어하는 것": ["시끄러운 곳", "약속 늦는 사람", "미세먼지", "장마", "월요일", "긴 회의"],
    "꿈": ["카페 사장", "세계 여행", "작가", "유튜버", "교수", "내 집 마련"],
    "자주 하는 말": ["진짜?", "대박", "괜찮아", "배고파", "졸려", "화이팅"],
}
# What the user says; some touch a stored fact, some nothing at all (the threshold then says "no memory").
TURNS = [
    "엄마 생일이 언제였더라? 선물 준비해야 하는데",
    "오늘 저녁 떡볶이 먹을까 마라탕 먹을까",
    "주말에 친구 민지랑 놀기로 했어",
    "요즘 잠이 너무 안 와서 힘들어",
    "로라야 오늘 날씨 진짜 좋다",
    "아빠가 좋아하는 운동이 뭐였지?",
    "다음 달에 여행 갈 건데 어디가 좋을까",
    "나 내일 토익 시험이야 떨려",
    "우리 강아지 초코 산책시켜야 돼",
    "팀장님이랑 회의하는데 너무 길었어",
    "남자친구 선물로 뭐가 좋을까?",
    "로라야 너는 무슨 계절 좋아해?",
    "할머니 댁에 가는데 뭐 사 가지?",
    "오늘 야구 보러 가! LG 이겨라",
    "새로 산 러닝화 신고 한강 뛰었어",
    "동생이 고양이를 무서워해",
    "로라야 안녕 뭐 해?",
    "점심으로 김치찌개 먹었어",
    "기타 배우는데 손가락이 아파",
    "이번 주말엔 그냥 집에서 쉬고 싶다",
]


def memory_facts(count: int = MEMORIES, seed: int = 0) -> list[Fact]:
    """`count` distinct Korean facts in the `[key: value]` form, one per (owner, attribute), values drawn
    with a fixed seed so every run stores the same memories."""
    pairs = [(owner, attribute) for attribute in ATTRIBUTES for owner in OWNERS]
    if count > len(pairs):
        raise ValueError(f"at most {len(pairs)} memories can be made from the templates; {count} asked")
    rng = random.Random(seed)
    rng.shuffle(pairs)
    facts = []
    for owner, attribute in pairs[:count]:
        key, value = f"{owner} {attribute}".strip(), rng.choice(ATTRIBUTES[attribute])
        facts.append(Fact(key, value, f"[{key}: {value}]"))
    return facts


async def original_recall(store: RedisStore, memory: llm_pb2_grpc.MemoryServiceStub, uid: str, text: str,
                          max_texts: int) -> str:
    """The original's recall: every memory line embedded again together with the text, then the top-1
    cosine if it reaches the threshold. Same embedder, memory service, query text (without a leading "로라야") and
    scoring as the gateway's, so the difference measured is the re-embedding; `max_texts` is the service's
    per-call limit."""
    memories = [t for t in (await store.memory_texts(uid)).values() if len(squash(t)) >= 3]
    if not memories:
        return ""
    turn = without_address(text)
    query = await memory.Embed(llm_pb2.EmbedRequest(texts=[turn], kind="query"), timeout=ORIGINAL_DEADLINE_S)
    rows: list[list[float]] = []
    for start in range(0, len(memories), max_texts):
        batch = memories[start:start + max_texts]
        embedded = await memory.Embed(llm_pb2.EmbedRequest(texts=batch, kind="passage"), timeout=ORIGINAL_DEADLINE_S)
        rows += [list(e.values) for e in embedded.embeddings]
    q = np.array(query.embeddings[0].values, dtype=np.float32)
    return best_memory(q, memories, np.array(rows, dtype=np.float32), query.threshold, turn, query.lexical_weight)


@dataclass
class Timings:
    """Milliseconds per call of one way of recalling, and what it chose."""

    ms: list[float] = field(default_factory=list)
    chosen: list[str] = field(default_factory=list)

    async def time(self, call: Awaitable[str]) -> str:
        started = time.perf_counter()
        result = await call
        self.ms.append((time.perf_counter() - started) * 1000)
        self.chosen.append(result)
        return result

    def row(self, name: str) -> list[object]:
        return [name, len(self.ms), percentile(self.ms, 0.5), percentile(self.ms, 0.95), max(self.ms, default=float("nan"))]


@dataclass
class RecallRun:
    fill_ms: float
    memo: Timings  # the gateway's recall, vectors from this process's memo (a replica that served the user)
    redis: Timings  # the gateway's recall, vectors read from Redis (a replica new to the user)
    original: Timings
    query_only: Timings  # the query Embed call alone
    agreements: int  # rounds where the original chose what the gateway chose
    embedder: str
    threshold: float


def _warn_fails(message: str) -> None:
    """The bench's warn: a recall that falls back to 'no memory' would time the wrong path, so it stops the run."""
    raise RuntimeError(f"recall warned instead of recalling: {message}")


async def _run(redis_url: str, memory_address: str, max_texts: int, memories: int, rounds: int) -> RecallRun:
    settings = GatewaySettings(redis_url=redis_url, memory_address=memory_address)
    store = RedisStore.connect(redis_url, prefix="bench")
    fresh_replica = RedisStore.connect(redis_url, prefix="bench", vector_memo_bytes=0, text_memo_entries=0)
    down = Downstream(settings)
    try:
        await store.check_schema()
        for fact in memory_facts(memories):
            await store.add_memory(USER, fact, "added")  # as AddMemory and ImportMemories store them: no vector yet
        gateway, replica = TurnRunner(settings, store, down), TurnRunner(settings, fresh_replica, down)

        started = time.perf_counter()
        await gateway.recall(USER, TURNS[0], _warn_fails)
        fill_ms = (time.perf_counter() - started) * 1000

        for text in TURNS[:3]:  # warm-up: connections, the service's first calls of each size
            await gateway.recall(USER, text, _warn_fails)
            await replica.recall(USER, text, _warn_fails)
        await original_recall(store, down.memory, USER, TURNS[0], max_texts)
        memo, redis, original, query_only = Timings(), Timings(), Timings(), Timings()

        agreements = 0
        for i in range(rounds):
            text = TURNS[i % len(TURNS)]
            chosen = await memo.time(gateway.recall(USER, text, _warn_fails))
            await redis.time(replica.recall(USER, text, _warn_fails))
            await query_only.time(_embed_query(down.memory, text, settings.embed_deadline))
            if i % ORIGINAL_EVERY == 0:
                agreements += await original.time(original_recall(store, down.memory, USER, text, max_texts)) == chosen
        probe = await down.memory.Embed(llm_pb2.EmbedRequest(texts=["안녕"], kind="query"), timeout=settings.embed_deadline)
        return RecallRun(fill_ms, memo, redis, original, query_only, agreements, probe.embedder_id, probe.threshold)
    finally:
        await down.close()
        await fresh_replica.close()
        await store.close()


async def _embed_query(memory: llm_pb2_grpc.MemoryServiceStub, text: str, deadline: float) -> str:
    await memory.Embed(llm_pb2.EmbedRequest(texts=[text], kind="query"), timeout=deadline)
    return ""


def measure_recall(config: Path, memories: int = MEMORIES, rounds: int = 100) -> SuiteResult:
    """Starts Redis and the memory service on `config`, stores `memories` memories and times `rounds` recalls
    each way (the original's every ORIGINAL_EVERY-th round)."""
    root = Path(tempfile.mkdtemp(prefix="ohlora-bench-recall-"))
    server = RedisServer(root / "redis", free_port(), tied_to_parent=True).start()
    service = ServiceProcessHandle(["serve", "llm_memory", "--config", str(config)], free_port(), root / "memory.log")
    try:
        service.wait_serving(timeout=600)  # its error carries the service's log
        embedder = load_settings(config).embedder
        run = asyncio.run(_run(server.url, service.address, embedder.max_texts, memories, rounds))
    finally:
        service.terminate()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return _result(run, memories, embedder.backend)


def _result(run: RecallRun, memories: int, backend: str) -> SuiteResult:
    cached, original = percentile(run.memo.ms, 0.5), percentile(run.original.ms, 0.5)
    recalled = sum(1 for c in run.memo.chosen if c)
    blank = ["-", "-"]
    return SuiteResult(
        columns=["recall of one turn", "calls", "p50 ms", "p95 ms", "max ms"],
        rows=[
            run.memo.row("gateway: query embedded, vectors cached (memo)"),
            run.redis.row("gateway, replica new to the user (vectors from Redis)"),
            run.original.row("original: every memory re-embedded each turn"),
            run.query_only.row("the query Embed call alone (floor)"),
            ["gateway's first recall: fill the vector cache (once)", 1, run.fill_ms, *blank],
        ],
        results={
            "recall_p95_ms": percentile(run.memo.ms, 0.95),
            "recall_speedup": original / cached,
            "recall_p50_ms": cached,
            "recall_original_p50_ms": original,
            "recall_redis_p95_ms": percentile(run.redis.ms, 0.95),
            "recall_query_embed_p50_ms": percentile(run.query_only.ms, 0.5),
            "recall_fill_s": run.fill_ms / 1000,
        },
        notes=[
            f"{memories} Korean memories of one user in a real redis-server; memory service `ohlora serve llm_memory` "
            f"({run.embedder}, threshold {run.threshold:g}, embedder backend {backend}); "
            f"{len(TURNS)} Korean turn texts in turn, the ways alternated in each round",
            f"the original's way ran every {ORIGINAL_EVERY}th round ({len(run.original.ms)} times); it chose the "
            f"gateway's memory in {run.agreements} of {len(run.original.ms)}",
            f"the gateway recalled a memory in {recalled} of {len(run.memo.ms)} turns (the rest were below the threshold)",
            f"of the gateway's p50, the query Embed call alone is {percentile(run.query_only.ms, 0.5):.1f} ms: the rest "
            f"({cached - percentile(run.query_only.ms, 0.5):.1f} ms) is Redis, the memo and the scoring",
            "recall_speedup = the original's median / the gateway's median (memo); the fill is a one-time cost "
            "(memories added without a vector: AddMemory, ImportMemories), not in the figures",
        ],
        details={"memo_ms": run.memo.ms, "redis_ms": run.redis.ms, "original_ms": run.original.ms,
                 "query_only_ms": run.query_only.ms, "fill_ms": run.fill_ms},
    )


def recall(quick: bool) -> SuiteResult:
    from ohlora.presets import preset_config

    return measure_recall(preset_config("mini"), rounds=20 if quick else 100)
