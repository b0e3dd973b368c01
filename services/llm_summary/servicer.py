"""SummaryService: a one-line summary of (final input, reply)."""

from __future__ import annotations

import grpc

from ohlora.llm.host import LLMHost, stats_message
from ohlora.llm.task import complete_task
from ohlora.llm.validation import require_text
from ohlora.runtime.server import ServiceBinding
from ohlora.v1 import llm_pb2, llm_pb2_grpc
from services.llm_summary.task import SUMMARY_TASK

SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["SummaryService"].full_name


class SummaryServicer(llm_pb2_grpc.SummaryServiceServicer):
    def __init__(self, host: LLMHost) -> None:
        self.host = host

    async def Summarize(self, request: llm_pb2.SummarizeRequest, context: grpc.aio.ServicerContext) -> llm_pb2.SummarizeResponse:
        limit = self.host.max_input_chars
        final_input = require_text(request.final_input, "final_input", limit)
        reply = require_text(request.reply, "reply", limit)
        generator = self.host.generator("summary")
        result = await complete_task(
            generator, SUMMARY_TASK, self.host.dialect("summary"), final_input=final_input, reply=reply
        )
        response = llm_pb2.SummarizeResponse(stats=stats_message(result.stats))
        if result.value is not None:
            response.summary = result.value
        return response


def binding(host: LLMHost) -> ServiceBinding:
    return ServiceBinding(SERVICE_NAME, lambda server: llm_pb2_grpc.add_SummaryServiceServicer_to_server(SummaryServicer(host), server))
