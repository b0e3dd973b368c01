"""PoseService: the expression words for a reply and the weights drawn from them."""

from __future__ import annotations

import grpc

from ohlora.llm.host import LLMHost, stats_message
from ohlora.llm.task import complete_task
from ohlora.llm.validation import require_text
from ohlora.runtime.server import ServiceBinding
from ohlora.v1 import common_pb2, llm_pb2, llm_pb2_grpc
from services.llm_pose.task import POSE_TASK, draw_weights

SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["PoseService"].full_name


class PoseServicer(llm_pb2_grpc.PoseServiceServicer):
    def __init__(self, host: LLMHost) -> None:
        self.host = host

    async def DecideExpression(self, request: llm_pb2.PoseRequest, context: grpc.aio.ServicerContext) -> llm_pb2.PoseResponse:
        reply = require_text(request.reply, "reply", self.host.max_input_chars)
        generator = self.host.generator("pose")
        result = await complete_task(generator, POSE_TASK, self.host.dialect("pose"), reply=reply)
        words = result.value
        eyes, mouth, pose = draw_weights(words)
        return llm_pb2.PoseResponse(
            eyes_text=words.eyes,
            mouth_text=words.mouth,
            pose_text=words.pose,
            expression=common_pb2.Expression(eyes=eyes, mouth=mouth, pose=pose),
            stats=stats_message(result.stats),
        )


def binding(host: LLMHost) -> ServiceBinding:
    return ServiceBinding(SERVICE_NAME, lambda server: llm_pb2_grpc.add_PoseServiceServicer_to_server(PoseServicer(host), server))
