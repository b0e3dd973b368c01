"""Every case in the original's parser fixture is reproduced by this project's parsers."""

from __future__ import annotations

import random

import pytest

from ohlora.llm.task import Dialect, Reject, token_rule_rejects
from services.llm_memory.task import EXTRACT_TASK, check_memory
from services.llm_message.task import REPLY_TASK, build_prompt as reply_prompt, check_reply, clean_reply
from services.llm_pose.task import POSE_TASK, ExpressionWords, build_prompt as pose_prompt, check_expression, draw_weights
from services.llm_summary.task import SUMMARY_TASK, build_prompt as summary_prompt, check_summary

ORIGINAL = Dialect.ORIGINAL


def cases(parser_cases: list[dict], function: str) -> list[dict]:
    found = [c for c in parser_cases if c["function"] == function]
    assert found, f"no fixture cases for {function}"
    return found


def outcome(check, text: str, *args) -> object:
    try:
        return check(text, *args)
    except Reject:
        return "reject"


def test_reply_cases(parser_cases):
    settings = REPLY_TASK.settings[ORIGINAL]
    for case in cases(parser_cases, "generate_llm_answer"):
        inp = case["input"]
        if token_rule_rejects(settings, new_tokens=0, total_tokens=inp["total_tokens"]):
            got = "reject"
        else:
            got = outcome(check_reply, inp["continuation"], inp["trial"])
        assert got == case["output"], case
        if got != "reject":
            assert clean_reply(got) == case["output_after_clean_llm_answer"], case
        else:
            assert REPLY_TASK.fallback() == case["upstream_return_if_all_15_tries_fail"]


def test_clean_cases(parser_cases):
    for case in cases(parser_cases, "clean_llm_answer"):
        assert clean_reply(case["input"]) == case["output"], case


def test_memory_cases(parser_cases):
    settings = EXTRACT_TASK.settings[ORIGINAL]
    for case in cases(parser_cases, "parse_memory"):
        inp = case["input"]
        expected = case.get("expected_fixed", case["output"])
        if token_rule_rejects(settings, new_tokens=inp["new_tokens"], total_tokens=0):
            got = "reject"
        else:
            got = outcome(check_memory, inp["continuation"])
            got = [got] if got != "reject" else got
        assert got == expected, case


def test_summary_cases(parser_cases):
    settings = SUMMARY_TASK.settings[ORIGINAL]
    for case in cases(parser_cases, "summarize_llm_answer"):
        inp = case["input"]
        if token_rule_rejects(settings, new_tokens=inp["new_tokens"], total_tokens=0):
            got = "reject"
        else:
            got = outcome(check_summary, inp["continuation"])
        assert got == case["output"], case


def test_expression_text_cases(parser_cases):
    for case in cases(parser_cases, "decide_property_score_texts"):
        got = outcome(check_expression, case["input"]["continuation"])
        if got != "reject":
            got = [got.eyes, got.mouth, got.pose]
        assert got == case["output"], case
        if got == "reject":
            fb = POSE_TASK.fallback()
            assert [fb.eyes, fb.mouth, fb.pose] == case["upstream_return_if_all_3_tries_fail"]


class FixedDraw(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize("original_pose_bug", [True, False])
def test_weight_ranges(parser_cases, original_pose_bug):
    for case in cases(parser_cases, "decide_property_scores"):
        words = ExpressionWords(case["input"]["eyes_text"], case["input"]["mouth_text"], case["input"]["pose_text"])
        low = draw_weights(words, FixedDraw(0.0), original_pose_bug)
        high = draw_weights(words, FixedDraw(1.0), original_pose_bug)
        out = case["output"]
        if original_pose_bug or case["pose_range_if_the_branch_tested_pose_text"] is None:
            assert list(low) == pytest.approx(out["with_random_0.0"]), case
            assert list(high) == pytest.approx(out["with_random_1.0_supremum"]), case
        else:
            # The fix: the head-turn range follows the pose word, not the mouth word.
            assert sorted([low[2], high[2]]) == pytest.approx(case["pose_range_if_the_branch_tested_pose_text"])
            assert list(low[:2]) == pytest.approx(out["with_random_0.0"][:2])


def test_seeded_weights(parser_cases):
    for case in cases(parser_cases, "decide_property_scores.seeded"):
        inp = case["input"]
        words = ExpressionWords(inp["eyes_text"], inp["mouth_text"], inp["pose_text"])
        got = draw_weights(words, random.Random(inp["python_random_seed"]), original_pose_bug=True)
        assert list(got) == pytest.approx(case["output"], abs=1e-12)


def test_generation_calls(parser_cases):
    calls = {c["function"].split(".")[0]: c for c in cases(parser_cases, "generate_llm_answer.generation_call")
             + cases(parser_cases, "parse_memory.generation_call")
             + cases(parser_cases, "summarize_llm_answer.generation_call")
             + cases(parser_cases, "decide_property_score_texts.generation_call")}
    pairs = {
        "generate_llm_answer": (REPLY_TASK, lambda i: reply_prompt(i["final_ohlora_input"])),
        "parse_memory": (EXTRACT_TASK, lambda i: reply_prompt(i["final_ohlora_input"])),
        "summarize_llm_answer": (SUMMARY_TASK, lambda i: summary_prompt(i["final_ohlora_input"], i["llm_answer_cleaned"])),
        "decide_property_score_texts": (POSE_TASK, lambda i: pose_prompt(i["llm_answer_cleaned"])),
    }
    for function, (task, prompt) in pairs.items():
        case = calls[function]
        out = case["output"]
        assert prompt(case["input"]) == out["tokenizer_input"]
        settings = task.settings[ORIGINAL]
        kwargs = out["generate_kwargs"]
        assert settings.temperature == kwargs["temperature"]
        assert settings.max_new_tokens == kwargs.get("max_new_tokens")
        assert settings.max_total_tokens == kwargs.get("max_length")
        assert task.max_attempts == out["max_trials"]
        fallback = task.fallback()
        if isinstance(fallback, ExpressionWords):
            fallback = [fallback.eyes, fallback.mouth, fallback.pose]
        assert fallback == out["fallback"]
