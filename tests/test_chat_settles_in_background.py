"""`ohlora chat` gives the prompt back once the reply and the expression are in; the turn settles in the
background, its late warnings print when they come, and a message typed meanwhile waits for the user's lock."""

from __future__ import annotations

import os
import re
import sys
import time

import grpc
import pexpect

from conftest import md
from ohlora.chat import PROMPT, SPEAKER
from ohlora.v1 import gateway_pb2, gateway_pb2_grpc

SLOW_SECONDS = 4.0
LATE_WARNING = re.escape("[warning] memory extraction failed")


def test_the_prompt_comes_back_before_the_turn_settles(shared_stack):
    # Memory and summary answer only after SLOW_SECONDS; extraction's deadline is shorter, so it fails late.
    slow = shared_stack.llm("memory,summary", env={"OHLORA_LLM__ARTIFICIAL_DELAY_SECONDS": str(SLOW_SECONDS)})
    slow.wait_serving()
    gateway = shared_stack.gateway(shared_stack.fast.address, slow.address, slow.address, shared_stack.fast.address,
                                   shared_stack.face.address, {"OHLORA_GATEWAY__EXTRACT_DEADLINE": "2"})
    gateway.wait_serving()
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    child = pexpect.spawn(sys.executable, ["-m", "ohlora.cli", "chat", "--gateway", gateway.address, "--user", "term-bg",
                                           "--view", "none"], env=env, encoding="utf-8", timeout=90, dimensions=(40, 160))
    try:
        child.expect_exact(PROMPT)
        sent = time.monotonic()
        child.sendline("나 내일 시험이야")
        child.expect_exact(SPEAKER)
        child.expect_exact(PROMPT)
        prompt_back = time.monotonic() - sent
        child.sendline("로라야 나 떨려")  # typed while the first turn is still settling
        child.expect(LATE_WARNING)  # the first turn's, while the second waits for the lock
        warned = time.monotonic() - sent
        child.expect_exact(SPEAKER)  # the second turn's reply, once the first has settled
        child.expect_exact(PROMPT)
        child.expect(LATE_WARNING)  # the second turn's, while the person is at the prompt:
        child.expect_exact(PROMPT)  # the prompt is drawn again after it
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert prompt_back + 1.0 < warned, (prompt_back, warned)
    stub = gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(gateway.address))
    first, second = stub.ListTurns(gateway_pb2.ListTurnsRequest(limit=5), metadata=md("term-bg")).turns
    assert first.user_text == "나 내일 시험이야" and second.user_text == "로라야 나 떨려"
    assert first.ended - first.started >= SLOW_SECONDS, "the first turn settled only after the slow background work"
    assert second.started >= first.ended, "the second message waited for the user's lock"
    if first.summary:
        assert second.final_input == f"(오로라 답변 요약) {first.summary} (사용자 질문) 로라야 나 떨려"
    slow.terminate()
    gateway.terminate()
