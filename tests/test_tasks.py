"""The shared attempt loop, reply previews, and both prompt dialects of every task."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ohlora.llm.engine import EngineConfig, LLMEngine
from ohlora.llm.task import (
    ChatPrompt,
    Dialect,
    Finished,
    GenerationSettings,
    GenerationUpdate,
    Progress,
    Rejected,
    TaskGenerator,
    complete_task,
    run_task,
)
from services.llm_memory.task import EXTRACT_TASK, Fact
from services.llm_message.task import REPLY_TASK, preview_reply
from services.llm_pose.task import POSE_TASK, ExpressionWords
from services.llm_summary.task import SUMMARY_TASK


class ScriptedGenerator(TaskGenerator):
    """Plays back fixed continuations, one per attempt: exercises the loop, not a model."""

    def __init__(self, continuations: list[str], tokens: int = 10) -> None:
        self.continuations = continuations
        self.tokens = tokens
        self.prompts: list[str | ChatPrompt] = []
        self.attempts: list[int] = []

    async def generate(self, prompt, settings: GenerationSettings, stream: bool = False) -> AsyncIterator[GenerationUpdate]:
        self.prompts.append(prompt)
        self.attempts.append(settings.attempt)
        text = self.continuations[len(self.prompts) - 1]
        if stream:
            for end in range(1, len(text)):
                yield GenerationUpdate(text[:end], end, end, False)
        yield GenerationUpdate(text, self.tokens, self.tokens + 5, True)


async def test_loop_retries_until_a_parse_succeeds():
    gen = ScriptedGenerator(["(눈 이상해)", " (눈 크게, 입 보통, 고개 돌림 많이) (답변 종료)"])
    events = [e async for e in run_task(gen, POSE_TASK, Dialect.ORIGINAL, reply=" 와 대박!")]
    assert isinstance(events[0], Rejected) and events[0].attempt == 1
    assert isinstance(events[1], Finished) and events[1].value == ExpressionWords("크게", "보통", "많이")
    assert events[1].stats.attempts == 2 and not events[1].stats.fallback
    assert gen.attempts == [1, 2], "each attempt is numbered for the engine (a seeded retry samples anew)"
    assert gen.prompts == [" 와 대박! (답변 시작)"] * 2


async def test_loop_falls_back_after_max_attempts():
    gen = ScriptedGenerator(["[a: b: c]"] * 5)
    result = await complete_task(gen, EXTRACT_TASK, Dialect.ORIGINAL, final_input="안녕")
    assert result.value is None and result.stats.fallback and result.stats.attempts == 5


async def test_token_budget_rule_rejects():
    gen = ScriptedGenerator([" [상태: 행복]"] * 5, tokens=24)
    result = await complete_task(gen, EXTRACT_TASK, Dialect.ORIGINAL, final_input="안녕")
    assert result.stats.fallback


async def test_chat_dialect_prefixes_a_space_for_the_shared_parser():
    gen = ScriptedGenerator(["응 좋아!"])
    result = await complete_task(gen, REPLY_TASK, Dialect.CHAT, final_input="로라야 놀자")
    assert result.value == " 응 좋아!" and result.stats.attempts == 1
    assert isinstance(gen.prompts[0], ChatPrompt) and gen.prompts[0].user == "로라야 놀자"
    assert "오로라" in gen.prompts[0].system


async def test_streaming_progress_then_finished():
    gen = ScriptedGenerator([" 안녕! (답변 종료)"])
    events = [e async for e in run_task(gen, REPLY_TASK, Dialect.ORIGINAL, stream=True, final_input="안녕")]
    assert all(isinstance(e, Progress) for e in events[:-1]) and len(events) > 3
    assert isinstance(events[-1], Finished) and events[-1].value == " 안녕! "


@pytest.mark.parametrize(
    "partial,shown",
    [
        (" 안녕! (답", " 안녕! "),
        (" 안녕! (답변 종", " 안녕! "),
        (" 안녕! (답변 종료) 뒤", " 안녕! "),
        ("➤ 좋아", " 좋아"),
        ("[좋아하는 음식: 케", ""),
        ("[좋아하는 음식: 케이크] 오! 케이", " 오! 케이"),
        (" - 응", " 응"),
    ],
)
def test_preview_holds_back_what_may_change(partial, shown):
    assert preview_reply(partial) == shown


def test_summary_original_prompt_has_no_space_after_marker():
    assert SUMMARY_TASK.build_prompt(final_input="안녕", reply=" 반가워") == "안녕 (오로라 답변) 반가워 (답변 시작)"


@pytest.fixture(scope="module")
async def chat_engine(tiny_models):
    engine = LLMEngine.load(EngineConfig(base_model=str(tiny_models.base), dtype="float32", device="cpu"))
    engine.start()
    yield engine
    await engine.stop()


@pytest.mark.parametrize(
    "spec,fields",
    [
        (REPLY_TASK, {"final_input": "[상태: 시험 끝남] 로라야 놀자"}),
        (EXTRACT_TASK, {"final_input": "나 내일 시험이야"}),
        (SUMMARY_TASK, {"final_input": "로라야 뭐 해?", "reply": " 나 공부 중!"}),
        (POSE_TASK, {"reply": " 와 진짜 대박이다!"}),
    ],
    ids=lambda v: getattr(v, "name", None),
)
async def test_chat_dialect_runs_on_a_real_model_without_adapter(chat_engine, spec, fields):
    prompt = spec.build_chat(**fields)
    rendered = chat_engine.tokenizer.decode(chat_engine.encode_prompt(prompt))
    assert prompt.system in rendered and prompt.user in rendered
    assert prompt.examples and all(q in rendered and a in rendered for q, a in prompt.examples), "few-shot turns reach the model"
    result = await complete_task(chat_engine.for_adapter(None), spec, Dialect.CHAT, **fields)
    assert 1 <= result.stats.attempts <= spec.max_attempts
    assert result.stats.fallback or result.value is not None or spec is EXTRACT_TASK
    if spec is EXTRACT_TASK and result.value is not None:
        assert isinstance(result.value, Fact)


@pytest.mark.parametrize("answer", ["없음", " 없음.", "[없음]"])
async def test_chat_memory_explicit_nothing_is_the_originals_empty_answer(answer):
    gen = ScriptedGenerator([answer])
    result = await complete_task(gen, EXTRACT_TASK, Dialect.CHAT, final_input="로라야 안녕")
    assert result.value is None and not result.stats.fallback and result.stats.attempts == 1


async def test_chat_memory_nothing_inside_a_sentence_is_not_nothing():
    gen = ScriptedGenerator(["기억할 것 없음 같아"] * 5)
    result = await complete_task(gen, EXTRACT_TASK, Dialect.CHAT, final_input="로라야 안녕")
    assert result.stats.fallback, "only the bare word counts; anything else must be a [key: value]"


def test_chat_prompts_carry_few_shot_turns_as_earlier_messages():
    prompt = EXTRACT_TASK.build_chat(final_input="나 고양이 키워")
    messages = prompt.messages()
    assert messages[0]["role"] == "system" and messages[-1] == {"role": "user", "content": "나 고양이 키워"}
    assert [m["role"] for m in messages[1:-1]] == ["user", "assistant"] * len(prompt.examples)
    assert any(answer == "없음" for _, answer in prompt.examples)


@pytest.mark.parametrize(
    "memory,summary,text",
    [("[상태: 시험 끝남]", "", "로라야 놀자"), ("", "MBTI 는 ENTJ", "그럼 계획파야?"), ("", "", "안녕 [이건] 그냥 말")],
)
def test_chat_prompts_take_the_context_out_of_the_user_message(memory, summary, text):
    from ohlora.llm.final_input import build_final_input, split_final_input

    final_input = build_final_input(memory, summary, text)
    split = split_final_input(final_input)
    assert (split.memory, split.summary, split.text) == (memory, summary, text)
    reply = REPLY_TASK.build_chat(final_input=final_input)
    assert reply.user == text and (memory or summary or "@@") in reply.system + "@@"
    assert EXTRACT_TASK.build_chat(final_input=final_input).user == text, "facts come from the user's own words"
    assert SUMMARY_TASK.build_chat(final_input=final_input, reply=" 응!").user.startswith(f"사용자: {text}\n")


@pytest.mark.parametrize("text, fact, kept", [
    ("[생일: 3월 14일] 내 생일 기억나?", "[생일: 31일]", False),  # a question about a fact must not overwrite it
    ("내일은 일찍 자 볼게", "[내일 일정: 오전 5시 볼]", False),
    ("내 생일은 3월 14일이야", "[생일: 3월 14일]", True),
    ("나 벌써 스물여섯 살이야", "[나이: 26살]", True),  # said in words
    ("나 벌써 스물여섯 살이야", "[나이: 60살]", False),
    ("나 마흔인데 아직 마음은 청춘이야", "[나이: 40살]", True),
    ("로라야 나 크리스마스가 생일이야", "[생일: 12월 25일]", True),  # a named day says its date
    ("(오로라 답변 요약) 3월 14일 축하 (사용자 질문) 고마워", "[기념일: 3월 14일]", False),  # the summary is not the user's
    ("나 요즘 기타 배우고 있어", "[취미: 기타]", True),  # no number, nothing to check
])
async def test_memory_keeps_a_fact_only_with_numbers_the_user_said(text, fact, kept):
    gen = ScriptedGenerator([fact] * 3)
    result = await complete_task(gen, EXTRACT_TASK, Dialect.TUNED, final_input=text)
    assert (result.value is not None) == kept, result.value
    assert not result.stats.fallback
    assert result.stats.attempts == (1 if kept else 2), "an ungrounded fact is retried once, then it is nothing"


async def test_an_ungrounded_fact_gives_way_to_the_retry_that_has_the_users_number():
    gen = ScriptedGenerator(["[나이: 29살]", "[나이: 30살]"])
    result = await complete_task(gen, EXTRACT_TASK, Dialect.TUNED, final_input="저 서른 살이에요")
    assert result.value == Fact("나이", "30살", "[나이: 30살]") and result.stats.attempts == 2


def test_the_datasets_facts_are_grounded_but_two_that_compute_a_number():
    """What the memory adapter was taught passes the rule, so it drops facts the model invents, not learnt ones."""
    from ohlora.train.dataset import DATA_DIR, load_rows
    from services.llm_memory.task import ground_fact, to_fact

    ungrounded = [row.input_data for path in ("persona.csv", "memory-facts.csv", "lasting-facts.csv")
                  for row in load_rows(DATA_DIR / path)
                  if row.memory and ground_fact(to_fact(row.memory), 2, row.input_data) is None]
    assert ungrounded == ["로라야 나 너랑 동갑이다 03년생", "나 면접 붙었어!! 2차 간다"]


@pytest.mark.parametrize("dialect", [Dialect.TUNED, Dialect.CHAT])
@pytest.mark.parametrize("other_task", ["없음", "새벽이 떨어, 눈 보통, 입 보통, 고개 돌림 없음"])
async def test_a_reply_that_is_another_tasks_answer_is_retried(dialect, other_task):
    gen = ScriptedGenerator([other_task, "헐 왜 굶어! 지금이라도 빵 하나 사 먹어"])
    result = await complete_task(gen, REPLY_TASK, dialect, final_input="나 오늘 점심 굶었어")
    assert result.stats.attempts == 2 and "빵" in result.value


@pytest.mark.parametrize("text, first, retried", [
    ("[생일: 3월 14일] 로라야 너 생일은 언제야?", "3월 14일이면 3월 24일이야!", True),  # a date nobody said
    ("로라야 좋아하는 계절이 뭐야?", "10월 20일부터 12월 15일까지!", True),
    ("[생일: 3월 14일] 내 생일 기억나?", "3월 14일이잖아! 당연히 기억하지 🎂", False),  # the remembered date
    ("로라야 너 생일 언제야?", "나는 10월 11일생이야! 22살 ENTJ 😊", False),  # her own, from the persona
    ("아니 그건 싫어 ㅋㅋ 더 놀래", "ㅋㅋ 딱 30분만 더 놀고 자기!", False),  # durations are not dates
    ("나 벌써 스물여섯 살이야", "헐 26살! 완전 좋을 때다", False),  # said in words
])
async def test_a_reply_with_a_date_nobody_said_is_retried_once(text, first, retried):
    gen = ScriptedGenerator([first, "그렇구나! 더 얘기해 줘 😊", first])
    result = await complete_task(gen, REPLY_TASK, Dialect.TUNED, final_input=text)
    assert result.stats.attempts == (2 if retried else 1)
    if retried:  # and a second attempt with such a date would stand: the reply is never lost for it
        again = await complete_task(ScriptedGenerator([first, first]), REPLY_TASK, Dialect.TUNED, final_input=text)
        assert again.stats.attempts == 2 and again.value.strip() == first


def test_no_reply_of_the_dataset_has_a_date_nobody_said():
    """The reply rule never fights what the adapter was taught."""
    from ohlora.train.dataset import PERSONA_CSV, load_rows
    from services.llm_message.task import ground_reply

    for row in load_rows(PERSONA_CSV):
        assert ground_reply(row.output_message, 1, row.input_data) == row.output_message
