"""Recall as the gateway does it (TurnRunner.recall): one matrix product over cached vectors must choose
what the straightforward loop over every record chose, on a real redis-server and a real memory service;
the vector cache fills in pieces the service accepts; `ohlora bench recall` reports both figures."""

from __future__ import annotations


import grpc
import numpy as np
import pytest

from gateway.downstream import Downstream
from gateway.recall import ABOUT_HER_KEY, asks_about_her, best_memory
from gateway.store import RedisStore, TextMemo, VectorMemo, squash
from gateway.turn import TurnRunner
from ohlora.bench.recall import TURNS, measure_recall, memory_facts
from ohlora.config import GatewaySettings
from ohlora.llm.persona import without_address
from ohlora.v1 import llm_pb2
from services.llm_memory.task import Fact


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def loop_choice(query: np.ndarray, texts: list[str], vectors: list[np.ndarray], threshold: float) -> str:
    """The gateway's recall before it was vectorised: a dot product per record, max over (score, text)."""
    score, best = max((float(np.dot(query, v)), t) for t, v in zip(texts, vectors))
    return best if score >= threshold else ""


def test_best_memory_chooses_what_the_loop_chooses():
    vectors = unit_rows(1000, 48, seed=1)
    texts = [f"[기억 {i}: 값 {i}]" for i in range(1000)]
    for seed in range(20):
        query = unit_rows(1, 48, seed=100 + seed)[0]
        for threshold in (-1.0, 0.3, 0.5):
            assert best_memory(query, texts, vectors, threshold) == loop_choice(query, texts, list(vectors), threshold)


def test_best_memory_ties_go_to_the_greatest_text_and_the_threshold_is_inclusive():
    vectors = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    texts = ["[가: 1]", "[나: 2]", "[다: 3]"]
    query = np.array([1, 0], dtype=np.float32)
    assert best_memory(query, texts, vectors, 1.0) == "[나: 2]" == loop_choice(query, texts, list(vectors), 1.0)
    assert best_memory(query, texts, vectors, 1.0001) == ""


def test_vector_memo_keeps_the_recently_used_within_its_bytes():
    memo = VectorMemo(max_bytes=3 * 16)  # three vectors of four float32
    for name in "abc":
        memo.put(("u", "e", name), np.full(4, ord(name), dtype=np.float32))
    assert memo.get(("u", "e", "a")) is not None  # "a" is now the most recently used
    memo.put(("u", "e", "d"), np.zeros(4, dtype=np.float32))
    assert memo.get(("u", "e", "b")) is None and len(memo) == 3
    assert [memo.get(("u", "e", n)) is not None for n in "acd"] == [True, True, True]
    VectorMemo(max_bytes=0).put(("u", "e", "a"), np.zeros(4, dtype=np.float32))  # off: keeps nothing, no error


def test_text_memo_keeps_the_most_recently_used_entries():
    memo = TextMemo(max_entries=3)
    for name in "abc":
        memo.put(("u", name), f"[{name}: 1]")
    assert memo.get(("u", "a")) == "[a: 1]"  # "a" is now the most recently used
    memo.put(("u", "d"), "[d: 1]")
    assert memo.get(("u", "b")) is None and len(memo) == 3
    TextMemo(max_entries=0).put(("u", "a"), "[a: 1]")  # off: keeps nothing, no error


async def test_memory_texts_follow_redis_through_the_memo(store, redis_server):
    """Texts come from the memo once read, but which memories exist is Redis's word: one forgotten is gone, one
    added by another gateway appears."""
    facts = memory_facts(20)
    ids = [(await store.add_memory("u", f, "added"))[0].id for f in facts]
    assert await store.memory_texts("u") == dict(zip(ids, (f.text for f in facts)))
    assert len(store.text_memo) == 20
    other = RedisStore.connect(redis_server.url, prefix=store.keys.prefix, text_memo_entries=0)
    try:
        assert await other.forget("u", ids[0])
        extra = Fact("새 기억", "값", "[새 기억: 값]")
        added, _ = await other.add_memory("u", extra, "added")
        expected = {**dict(zip(ids[1:], (f.text for f in facts[1:]))), added.id: extra.text}
        assert await store.memory_texts("u") == expected == await other.memory_texts("u")
        assert len(other.text_memo) == 0
    finally:
        await other.close()


async def test_memory_texts_and_vectors_for_read_what_was_stored(store, redis_server):
    odd = ['[따옴표 "와" 역슬래시\\: 값/경로]', "[이모지 😊: ✨ 🌹]", "[탭\t문자: 줄]"]
    added = {}
    for i, text in enumerate(odd + [f.text for f in memory_facts(50)]):
        key, value = text[1:-1].split(": ", 1)
        record, _ = await store.add_memory("u", Fact(key, value, text), "added",
                                           vector=np.full(4, i, dtype=np.float32) if i % 2 else None, embedder="e")
        added[record.id] = text
    assert await store.memory_texts("u") == added
    assert await store.memory_texts("u") == added  # the second time from the memo
    assert await store.memory_texts("nobody") == {}

    ids = list(added)
    fresh = RedisStore.connect(redis_server.url, prefix=store.keys.prefix, vector_memo_bytes=0)
    try:
        from_redis = await fresh.vectors_for("u", "e", ids)
    finally:
        await fresh.close()
    from_memo = await store.vectors_for("u", "e", ids)  # the first read fills the memo...
    assert len(store.vector_memo) == len(ids) // 2
    again = await store.vectors_for("u", "e", ids)  # ...which the second read uses
    for n, (a, b, c) in enumerate(zip(from_redis, from_memo, again)):
        if n % 2:
            assert a.tolist() == b.tolist() == c.tolist() == [float(n)] * 4
        else:
            assert a is None and b is None and c is None


@pytest.fixture
def memory_service(start_service, tiny_config):
    """The real memory service on the tiny models; threshold -1 so every recall returns its top memory."""
    service = start_service("serve", "llm_memory", "--config", str(tiny_config), env={"OHLORA_EMBEDDER__THRESHOLD": "-1.0"})
    service.wait_serving()
    return service


async def runner_with_memories(store: RedisStore, uid: str, facts: list[Fact], memory_address: str
                               ) -> tuple[TurnRunner, Downstream]:
    """The gateway's turn runner on the real memory service, with `facts` stored for `uid` (no vectors yet)."""
    for fact in facts:
        await store.add_memory(uid, fact, "imported")
    settings = GatewaySettings(redis_url="redis://unused", memory_address=memory_address)
    down = Downstream(settings)
    return TurnRunner(settings, store, down), down


def never_warns(message: str) -> None:
    raise AssertionError(f"recall warned: {message}")


async def test_recall_chooses_what_the_loop_over_every_record_chooses(store, memory_service):
    """300 memories without vectors (more than one Embed call may carry) and one too short to count: the first
    recall fills the cache in pieces; every recall then matches the loop over list_memories + vectors().
    The tiny embedder gives many memories the same vector (its tokenizer knows little Korean), so ties
    at the top are common: they go to the greatest text both ways."""
    facts = memory_facts(300) + [Fact("a", "b", "ab")]
    runner, down = await runner_with_memories(store, "u", facts, memory_service.address)
    try:
        chosen = [await runner.recall("u", text, never_warns) for text in TURNS]
        records = [r for r in await store.list_memories("u") if len(squash(r.text)) >= 3]
        for text, got in zip(TURNS, chosen):
            query = await down.memory.Embed(llm_pb2.EmbedRequest(texts=[without_address(text)], kind="query"))
            cached = await store.vectors("u", query.embedder_id)
            assert set(cached) == {r.id for r in records}  # filled, the too-short memory left out
            q = np.array(query.embeddings[0].values, dtype=np.float32)
            if asks_about_her(without_address(text)):  # recalls only what the user feels about her: none here
                assert not any(r.text.startswith(f"[{ABOUT_HER_KEY}:") for r in records) and got == "", text
                continue
            expected = loop_choice(q, [r.text for r in records], [cached[r.id] for r in records], query.threshold)
            assert got  # threshold -1: always a memory
            if got != expected:  # only a memory tied with the loop's to float rounding may differ (matmul vs dot)
                score = {r.text: float(np.dot(q, cached[r.id])) for r in records}
                assert abs(score[got] - score[expected]) < 1e-6, (text, got, expected)
        assert await runner.recall("nobody", TURNS[0], never_warns) == ""
    finally:
        await down.close()


async def test_recall_without_the_memory_service_warns_and_answers_without_memories(store):
    """Only a user with memories that count hears about it: one whose memories are all too short does not."""
    from ohlora.client import free_port

    await store.add_memory("short", Fact("a", "b", "ab"), "added")
    await store.add_memory("u", Fact("좋아하는 음식", "떡볶이", "[좋아하는 음식: 떡볶이]"), "added")
    settings = GatewaySettings(redis_url="redis://unused", memory_address=f"127.0.0.1:{free_port()}", embed_deadline=2.0)
    down = Downstream(settings)
    runner = TurnRunner(settings, store, down)
    warnings: list[str] = []
    try:
        assert await runner.recall("short", "떡볶이 먹을까", warnings.append) == ""
        assert warnings == []
        assert await runner.recall("u", "떡볶이 먹을까", warnings.append) == ""
    finally:
        await down.close()
    assert len(warnings) == 1 and "memory recall is unavailable" in warnings[0]
    assert grpc.StatusCode.UNAVAILABLE.name in warnings[0] or grpc.StatusCode.DEADLINE_EXCEEDED.name in warnings[0]


def test_the_recall_bench_reports_both_figures(tiny_config):
    """The suite itself, on the tiny models (the mini preset's embedder is what `ohlora bench recall` uses)."""
    result = measure_recall(tiny_config, memories=1000, rounds=6)
    assert {"recall_p95_ms", "recall_speedup"} <= set(result.results)
    assert result.results["recall_p95_ms"] > 0 and result.results["recall_speedup"] > 1
    assert [row[1] for row in result.rows] == [6, 6, 2, 6, 1]
    # The tiny tokenizer maps many memories to one token sequence: exact ties, so agreement is only reported.
    assert any("chose the gateway's memory in" in note for note in result.notes), result.notes


def test_word_overlap_counts_the_memorys_words_found_in_the_turn_particles_and_endings_aside():
    from gateway.recall import memory_words, word_overlap

    assert memory_words("[좋아하는 가수: 아이유]") == ("좋아하는", "가수", "아이유")
    assert memory_words("[가족: 여동생 지우]") == ("가족", "여동생", "지우")
    shares = word_overlap("여동생이랑 주말에 뭐 하지", ["[가족: 여동생 지우]", "[좋아하는 가수: 아이유]", "[x: y]"])
    # 여동생 is there, and so is 동생, a word of the key's topic (KEY_TOPICS["가족"]); 지우 is not: the topic's
    # TOPIC_SHARE (0.5) and half of the rest for one value word of two (0.75), more than 2 of 3 words.
    assert shares.tolist() == pytest.approx([0.75, 0.0, 0.0])
    # A stem: the word without its last syllable ("좋아하는" -> "좋아하" in "좋아하던").
    assert word_overlap("내가 좋아하던 가수 노래", ["[좋아하는 가수: 아이유]"]).tolist() == pytest.approx([2 / 3])


def test_a_key_topic_named_in_other_words_counts_as_the_key_found():
    from gateway.recall import KEY_TOPICS, memory_terms, word_overlap
    from ohlora.llm.persona import MEMORY_KEYS

    assert set(KEY_TOPICS) <= set(MEMORY_KEYS), set(KEY_TOPICS) - set(MEMORY_KEYS)
    assert memory_terms("[사는 곳: 대전]") == ((("사는", *KEY_TOPICS["사는 곳"]), ("대전",)), 0)
    memories = ["[사는 곳: 대전]", "[연인: 민준]", "[상태: 시험 기간]"]
    assert word_overlap("우리 동네에 갈 만한 데 있어?", memories).tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert word_overlap("남친이랑 싸웠어", memories).tolist() == pytest.approx([0.0, 0.5, 0.0])
    assert word_overlap("오늘 비 온대", memories).tolist() == [0.0, 0.0, 0.0]


def test_a_turn_that_names_the_memorys_topic_gets_the_topic_share_whatever_its_other_words():
    """The key's last word (or a word of its topic) found: at least TOPIC_SHARE, the rest by the value words found,
    where the plain share of words found would be less; the key's first words alone ("좋아하는") name no topic."""
    from gateway.recall import TOPIC_SHARE, word_overlap

    memories = ["[취미: 뜨개질 교실]", "[좋아하는 음식: 떡볶이 국물]", "[이번 주말 일정: 친구랑 캠핑]"]
    # 1 word of 3, 2 of 4, 2 of 5 found: the topic's share instead.
    assert word_overlap("오늘 저녁엔 취미 생활 좀 하고 싶다", memories).tolist() == pytest.approx([TOPIC_SHARE, 0, 0])
    assert word_overlap("내가 좋아하는 음식 골라 줘", memories).tolist() == pytest.approx([0, TOPIC_SHARE, 0])
    assert word_overlap("주말 일정 있어", memories).tolist() == pytest.approx([0, 0, TOPIC_SHARE])
    # The topic and one value word of two.
    assert word_overlap("떡볶이 말고 다른 음식", memories).tolist() == pytest.approx([0, 0.75, 0])
    # No topic: the plain share (좋아하는 is 1 word of 4).
    assert word_overlap("내가 좋아하는 가수 알아?", memories).tolist() == pytest.approx([0, 1 / 4, 0])


@pytest.mark.parametrize("turn, about_her", [
    ("너 생일은 언제야?", True), ("넌 무슨 음식 좋아해?", True), ("너, 주말엔 보통 뭐 해?", True),
    ("오로라는 무슨 뜻이야?", True), ("로라도 고양이 좋아해?", True),
    ("너 내 생일 기억해?", False), ("나 너 좋아해", False), ("우리 강아지 너무 귀엽지?", False),
    ("생일이 언제야?", False), ("고마워 로라", False),
])
def test_a_turn_about_her_has_a_second_person_and_no_first(turn: str, about_her: bool):
    assert asks_about_her(turn) is about_her


def test_a_turn_about_her_recalls_only_what_the_user_feels_about_her():
    texts = ["[생일: 3월 14일]", "[오로라에 대한 감정: 로라랑 얘기하면 편함]"]
    vectors = np.array([[0.9, np.sqrt(1 - 0.9**2)], [0.6, np.sqrt(1 - 0.6**2)]], dtype=np.float32)
    query = np.array([1.0, 0.0], dtype=np.float32)
    assert best_memory(query, texts, vectors, 0.5, "내 생일 기억해?", 0.25) == "[생일: 3월 14일]"
    assert best_memory(query, texts, vectors, 0.5, "너 생일은 언제야?", 0.25) == "[오로라에 대한 감정: 로라랑 얘기하면 편함]"
    assert best_memory(query, texts[:1], vectors[:1], 0.5, "너 생일은 언제야?", 0.25) == ""


def test_the_lexical_weight_lets_the_memory_the_turn_names_win_and_zero_keeps_the_cosine_rule():
    texts = ["[좋아하는 가수: 아이유]", "[반려동물: 고양이 보리]"]
    vectors = np.array([[0.7, np.sqrt(1 - 0.7**2)], [0.75, np.sqrt(1 - 0.75**2)]], dtype=np.float32)
    query = np.array([1.0, 0.0], dtype=np.float32)  # cosines 0.7 and 0.75: the cat wins on cosine alone
    turn = "요즘 좋아하는 가수 노래만 들어"
    assert best_memory(query, texts, vectors, 0.5, turn, 0.0) == "[반려동물: 고양이 보리]"
    assert best_memory(query, texts, vectors, 0.5, turn, 0.25) == "[좋아하는 가수: 아이유]"  # 0.7 + 0.25 * 2/3
    # Below the threshold on cosine, over it with the words the turn shares with the memory.
    assert best_memory(query, texts[1:], vectors[1:], 0.8, "보리 밥 줬어", 0.0) == ""
    assert best_memory(query, texts[1:], vectors[1:], 0.8, "보리 밥 줬어", 0.25) == "[반려동물: 고양이 보리]"  # + 0.25/3


async def test_the_memory_services_lexical_weight_reaches_the_gateways_recall(store, start_service, tiny_config):
    """With a weight that outweighs any cosine, the memory whose words the turn uses is recalled, through the real
    service (embedder.lexical_weight -> EmbedResponse.lexical_weight) and the gateway's recall."""
    service = start_service("serve", "llm_memory", "--config", str(tiny_config),
                            env={"OHLORA_EMBEDDER__THRESHOLD": "0.5", "OHLORA_EMBEDDER__LEXICAL_WEIGHT": "10"})
    service.wait_serving()
    facts = [Fact("반려동물", "고양이 보리", "[반려동물: 고양이 보리]"), Fact("취미", "뜨개질", "[취미: 뜨개질]"),
             Fact("좋아하는 가수", "아이유", "[좋아하는 가수: 아이유]")]
    runner, down = await runner_with_memories(store, "lex", facts, service.address)
    try:
        assert await runner.recall("lex", "로라야 보리가 밥을 안 먹어", never_warns) == "[반려동물: 고양이 보리]"
        assert await runner.recall("lex", "오늘은 뜨개질하면서 쉴래", never_warns) == "[취미: 뜨개질]"
        assert await runner.recall("lex", "요즘 좋아하는 가수 노래만 들어", never_warns) == "[좋아하는 가수: 아이유]"
    finally:
        await down.close()
