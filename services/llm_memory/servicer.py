"""MemoryService: extract one fact from the final input; embed texts for recall."""

from __future__ import annotations

import grpc

from ohlora.errors import InvalidInput, NotReady
from ohlora.llm.host import LLMHost, stats_message
from ohlora.llm.task import complete_task
from ohlora.llm.validation import require_text
from ohlora.runtime.server import ServiceBinding
from ohlora.v1 import llm_pb2, llm_pb2_grpc
from services.llm_memory.task import EXTRACT_TASK

SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name
EMBED_KINDS = ("", "query", "passage")


class MemoryServicer(llm_pb2_grpc.MemoryServiceServicer):
    def __init__(self, host: LLMHost) -> None:
        self.host = host

    async def Extract(self, request: llm_pb2.ExtractRequest, context: grpc.aio.ServicerContext) -> llm_pb2.ExtractResponse:
        final_input = require_text(request.final_input, "final_input", self.host.max_input_chars)
        generator = self.host.generator("memory")
        result = await complete_task(generator, EXTRACT_TASK, self.host.dialect("memory"), final_input=final_input)
        response = llm_pb2.ExtractResponse(stats=stats_message(result.stats))
        if result.value is not None:
            fact = result.value
            response.fact.CopyFrom(llm_pb2.MemoryFact(key=fact.key, value=fact.value, text=fact.text))
        return response

    async def Embed(self, request: llm_pb2.EmbedRequest, context: grpc.aio.ServicerContext) -> llm_pb2.EmbedResponse:
        embedder = self.host.embedder
        if embedder is None:
            raise NotReady("the embedder is still loading; retry when health reports SERVING")
        if not request.texts:
            raise InvalidInput("texts is empty; send at least one text to embed")
        limit = self.host.settings.embedder.max_texts
        if len(request.texts) > limit:
            raise InvalidInput(f"{len(request.texts)} texts sent; at most {limit} per call")
        if request.kind not in EMBED_KINDS:
            raise InvalidInput(f"kind {request.kind!r} is unknown; use 'query' or 'passage'")
        texts = [require_text(t, f"texts[{i}]", self.host.max_input_chars) for i, t in enumerate(request.texts)]
        vectors = await embedder.encode_async(texts, request.kind)
        return llm_pb2.EmbedResponse(
            embeddings=[llm_pb2.Embedding(values=v.tolist()) for v in vectors],
            embedder_id=embedder.embedder_id,
            dimension=embedder.dimension,
            threshold=embedder.threshold,
            lexical_weight=embedder.lexical_weight,
        )


def binding(host: LLMHost) -> ServiceBinding:
    return ServiceBinding(SERVICE_NAME, lambda server: llm_pb2_grpc.add_MemoryServiceServicer_to_server(MemoryServicer(host), server))
