"""Answers from a fixed set (ohlora.llm.answers) through the decoding loop, on the tiny GPT-NeoX in-process."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ohlora.llm.answers import AnswerTrie
from ohlora.llm.decoding import DecodeRow, Mention, decode
from ohlora.llm.engine import EngineConfig, LLMEngine
from ohlora.llm.task import Dialect, GenerationSettings, complete_task
from services.llm_message.task import REPLY_TASK
from services.llm_pose.task import EXPRESSION_ANSWERS, POSE_TASK, check_expression

HOT = GenerationSettings(temperature=2.0, max_new_tokens=32)


@pytest.fixture(scope="module")
async def engine(tiny_models):
    eng = LLMEngine.load(EngineConfig(base_model=str(tiny_models.base), dtype="float32", device="cpu", seed=3))
    eng.start()
    yield eng
    await eng.stop()


def test_the_trie_forces_what_the_answers_share(tiny_models):
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    answers = ["(눈 크게, 입 보통)", "(눈 크게, 입 크게)", "(눈 작게, 입 보통)"]
    trie = AnswerTrie(tokenizer, answers)
    opening, node = trie.root.forced()
    assert all(a.startswith(tokenizer.decode(opening)) for a in answers) and tokenizer.decode(opening).startswith("(눈")
    assert len(node.children) == 2, "the eyes word is a choice"
    for answer in answers:  # each answer is a path that ends where it ends
        node = trie.root
        for token in tokenizer.encode(answer, add_special_tokens=False):
            node = node.children[token]
        assert node.complete
    with pytest.raises(ValueError, match="at least one"):
        AnswerTrie(tokenizer, [])


async def test_every_expression_comes_from_the_set_even_when_sampled_hot(engine):
    """A random model never writes the format by itself; from the answer set it always does, whatever it samples."""
    replies = [f"오늘 기분 {i}" for i in range(12)]

    async def text(reply: str, settings: GenerationSettings) -> str:
        async for update in engine.for_adapter(None).generate(f"{reply} (답변 시작)", settings):
            pass
        return update.text

    free = await asyncio.gather(*(text(r, HOT) for r in replies))
    chosen = await asyncio.gather(*(text(r, GenerationSettings(2.0, 32, answers=EXPRESSION_ANSWERS)) for r in replies))
    assert not any(t in EXPRESSION_ANSWERS for t in free)
    assert all(t in EXPRESSION_ANSWERS for t in chosen), chosen
    assert len(set(chosen)) > 3, "the choices are sampled, not fixed"
    assert all(check_expression(t) for t in chosen)


async def test_the_expression_task_answers_from_its_set_in_the_chat_dialects(engine):
    assert POSE_TASK.settings_for(Dialect.TUNED).answers == EXPRESSION_ANSWERS
    assert not POSE_TASK.settings_for(Dialect.ORIGINAL).answers, "the original dialect samples as the original did"
    result = await complete_task(engine.for_adapter(None), POSE_TASK, Dialect.TUNED, reply="헐 대박!")
    assert result.stats.attempts == 1 and not result.stats.fallback


def test_decoding_spends_a_forward_pass_per_choice_not_per_token(tiny_models):
    """The shared stretches ride on the pass before them: passes = the prompt's + one per choice made."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base, dtype=torch.float32).eval()
    trie = AnswerTrie(tokenizer, EXPRESSION_ANSWERS)
    row = DecodeRow(tokenizer.encode("헐 대박 (답변 시작)"), 32, temperature=1.0, answers=trie)
    free = DecodeRow(tokenizer.encode("안녕 (답변 시작)"), 6, temperature=1.0)  # a free row in the same batch
    stop = {tokenizer.eos_token_id}

    def monitor(rows: list[DecodeRow]) -> list[bool]:
        return [r.complete or len(r.generated) >= r.max_new or bool(r.generated and r.generated[-1] in stop) for r in rows]

    with torch.inference_mode():
        passes = decode(model, [row, free], pad_id=tokenizer.pad_token_id, end_ids=stop, guards=[], monitor=monitor,
                        adapters_of=lambda rows: contextlib.nullcontext({}))
    text = tokenizer.decode(row.generated)
    assert text in EXPRESSION_ANSWERS
    node, choices = trie.root.forced()[1], 0
    for token in row.generated[len(trie.root.forced()[0]):]:
        choices += len(node.children) > 1
        node = node.children[token]
    assert len(row.generated) > 2 * choices, "most of the answer was written without a choice"
    # Each pass samples one token per row; the last choice's stretch completes the answer without another pass.
    assert passes == max(choices, len(free.generated)), (passes, choices, len(free.generated), text)


def test_a_batch_that_keeps_taking_newcomers_keeps_its_cache_short(tiny_models):
    """Rows join and leave for forty passes: the cache holds what its rows attend to, not the batch's age."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.base)
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base, dtype=torch.float32).eval()
    widths: list[int] = []
    model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(kwargs["attention_mask"].shape[1]),
                                    with_kwargs=True)
    prompt = tokenizer.encode("로라야 오늘 뭐 해? (답변 시작)")
    waiting = [DecodeRow(prompt, 3, temperature=1.0) for _ in range(40)]
    rows = [DecodeRow(prompt, 3, temperature=1.0)]

    def monitor(batch: list[DecodeRow]) -> list[bool]:
        return [len(r.generated) >= r.max_new for r in batch]

    with torch.inference_mode():
        decode(model, rows, pad_id=tokenizer.pad_token_id, end_ids=set(), guards=[], monitor=monitor,
               adapters_of=lambda batch: contextlib.nullcontext({}), admit=lambda running: waiting[:1] and [waiting.pop()])
    assert len(rows) == 41 and all(len(r.generated) == 3 for r in rows)
    assert len(widths) > 40 and max(widths) <= len(prompt) + 3 + 2, (max(widths), len(prompt))


def test_a_mention_nudges_the_next_token_of_each_path_until_one_is_said():
    mention = Mention(paths=((5, 6, 7), (9, 6, 7)), bias=2.0)
    scores = torch.zeros(12)
    mention.nudge([1, 2], scores)  # nothing of either path yet: both first tokens
    assert scores.nonzero().flatten().tolist() == [5, 9] and float(scores[5]) == 2.0
    scores = torch.zeros(12)
    scores[7] = float("-inf")
    mention.nudge([1, 5, 6], scores)  # the first path's first two tokens written: only its third (ruled out here)
    assert scores[7] == float("-inf") and not scores[:7].any() and not scores[8:].any()
    assert not mention.said([5, 6, 1, 7]) and mention.said([1, 9, 6, 7, 2])


async def test_a_tuned_reply_is_nudged_to_say_the_recalled_memory(engine):
    """The reply task gives a recalled memory's words to the engine, which nudges them in (a random model with a
    bias no logit of it can match says one; without the bias, none)."""
    final_input = "[가족: 남동생 민재] 민재가 다음 달에 군대 간대"
    memory = ("남동생",)
    assert REPLY_TASK.mention(final_input=final_input) == ("남동생 민재", "남동생"), "민재 is the turn's own word"
    assert REPLY_TASK.mention(final_input="[반려동물: 고양이 보리] 우리 고양이가 밥을 안 먹어") == ("고양이 보리", "보리")
    assert REPLY_TASK.settings_for(Dialect.TUNED).mention_bias > 0
    assert not REPLY_TASK.settings_for(Dialect.CHAT).mention_bias and not REPLY_TASK.settings_for(Dialect.ORIGINAL).mention_bias
    assert REPLY_TASK.mention(final_input="민재가 다음 달에 군대 간대") == ()
    # A fact's time is no part of what is remembered: saying "다음 달" is not saying it.
    assert REPLY_TASK.mention(final_input="[향후 일정: 다음 달 다낭 여행] 여행 가서 뭐 하지") == ("다음 달 다낭 여행", "다낭")

    async def reply(bias: float) -> str:
        # Any text is taken (a random model's bytes break the reply's own checks): the plumbing is under test.
        tuned = replace(REPLY_TASK.settings[Dialect.TUNED], mention_bias=bias, reject_at_tokens=None, max_new_tokens=24)
        spec = replace(REPLY_TASK, settings={**REPLY_TASK.settings, Dialect.TUNED: tuned}, parse=lambda a: a.text)
        return (await complete_task(engine.for_adapter(None), spec, Dialect.TUNED, final_input=final_input)).value

    plain = await reply(0.0)
    nudged = await reply(1e3)
    assert not any(w in plain for w in memory), plain
    assert sum(nudged.count(w) for w in memory) == 1, f"said once, then left alone: {nudged}"
