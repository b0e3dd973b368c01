"""MessageService: streams Oh-LoRA's reply; exposes the 48-token input guard."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from ohlora.errors import InvalidInput
from ohlora.llm.host import LLMHost, stats_message
from ohlora.llm.task import Finished, Progress, Rejected, run_task
from ohlora.llm.validation import require_text
from ohlora.runtime.server import ServiceBinding
from ohlora.v1 import llm_pb2, llm_pb2_grpc
from services.llm_message.task import MAX_INPUT_TOKENS, REPLY_TASK, TOO_LONG_MESSAGE, preview_reply

SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["MessageService"].full_name


class MessageServicer(llm_pb2_grpc.MessageServiceServicer):
    def __init__(self, host: LLMHost) -> None:
        self.host = host

    async def Reply(
        self, request: llm_pb2.ReplyRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.ReplyChunk]:
        final_input = require_text(request.final_input, "final_input", self.host.max_input_chars)
        generator = self.host.generator("message")
        shown = ""
        events = run_task(generator, REPLY_TASK, self.host.dialect("message"), stream=True, final_input=final_input)
        async for event in events:
            if isinstance(event, Progress):
                preview = preview_reply(event.text)
                if not preview.startswith(shown):
                    # The shown text was revised (e.g. a bracket closed): start over explicitly.
                    yield llm_pb2.ReplyChunk(reset=llm_pb2.ReplyReset(attempt=event.attempt, reason="revised"))
                    shown = ""
                if len(preview) > len(shown):
                    yield llm_pb2.ReplyChunk(delta=preview[len(shown) :])
                    shown = preview
            elif isinstance(event, Rejected):
                yield llm_pb2.ReplyChunk(reset=llm_pb2.ReplyReset(attempt=event.attempt, reason=event.reason))
                shown = ""
            elif isinstance(event, Finished):
                if shown != event.value:
                    if shown:
                        yield llm_pb2.ReplyChunk(reset=llm_pb2.ReplyReset(attempt=event.stats.attempts, reason="final"))
                    yield llm_pb2.ReplyChunk(delta=event.value)
                yield llm_pb2.ReplyChunk(done=llm_pb2.ReplyDone(text=event.value, stats=stats_message(event.stats)))

    async def CheckInput(
        self, request: llm_pb2.CheckInputRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.CheckInputResponse:
        if not request.text.strip():
            raise InvalidInput("text is empty; send the user's text to check")
        tokens = self.host.require_engine().count_tokens(request.text)
        ok = tokens <= MAX_INPUT_TOKENS
        return llm_pb2.CheckInputResponse(
            ok=ok, tokens=tokens, limit=MAX_INPUT_TOKENS, message="" if ok else TOO_LONG_MESSAGE
        )


def binding(host: LLMHost) -> ServiceBinding:
    return ServiceBinding(SERVICE_NAME, lambda server: llm_pb2_grpc.add_MessageServiceServicer_to_server(MessageServicer(host), server))
