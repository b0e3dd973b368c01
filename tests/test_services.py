"""Each LLM service as a real subprocess with a tiny GPT-NeoX and a LoRA adapter, over loopback."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest

from ohlora.client import ServiceProcessHandle, free_port, health_status, wait_all_serving
from ohlora.v1 import llm_pb2, llm_pb2_grpc
from services.llm_pose.task import EYES_WORDS, MOUTH_WORDS, POSE_WORDS


@pytest.fixture(scope="module")
def services(tiny_config: Path, tmp_path_factory: pytest.TempPathFactory):
    """One process per service, started together."""
    logs = tmp_path_factory.mktemp("logs")
    handles = {
        name: ServiceProcessHandle(["serve", f"llm_{name}", "--config", str(tiny_config)], free_port(), logs / f"{name}.log")
        for name in ("message", "memory", "summary", "pose")
    }
    try:
        wait_all_serving(list(handles.values()))
        yield handles
    finally:
        for handle in handles.values():
            handle.terminate()


def stub(handle: ServiceProcessHandle, cls):
    return cls(grpc.insecure_channel(handle.address))


def test_health_goes_from_not_serving_to_serving(services):
    for name, handle in services.items():
        assert "NOT_SERVING" in handle.seen_statuses, (name, handle.seen_statuses)
        assert handle.seen_statuses[-1] == "SERVING"
    assert health_status(services["message"].address, "ohlora.v1.MessageService") == "SERVING"
    assert health_status(services["message"].address, "ohlora.v1.PoseService") == "NOT_FOUND"


def test_message_service_streams_a_reply(services):
    message = stub(services["message"], llm_pb2_grpc.MessageServiceStub)
    chunks = list(message.Reply(llm_pb2.ReplyRequest(final_input="로라야 오늘 뭐 해?"), timeout=60))
    done = chunks[-1]
    assert done.HasField("done") and sum(c.HasField("done") for c in chunks) == 1
    assert 1 <= done.done.stats.attempts <= 15
    shown = ""
    for chunk in chunks[:-1]:
        shown = "" if chunk.HasField("reset") else shown + chunk.delta
    assert shown == done.done.text, "what the client shows must equal the final reply"
    if done.done.stats.fallback:
        assert done.done.text == "(읽씹)" and done.done.stats.attempts == 15


LONG_TEXT = " ".join(str(n) for n in range(100, 160))  # far more than 48 tokens for any tokenizer


def test_message_input_guard(services):
    message = stub(services["message"], llm_pb2_grpc.MessageServiceStub)
    short = message.CheckInput(llm_pb2.CheckInputRequest(text="로라야 안녕"))
    assert short.ok and short.limit == 48 and 0 < short.tokens <= 48 and short.message == ""
    long = message.CheckInput(llm_pb2.CheckInputRequest(text=LONG_TEXT))
    assert not long.ok and long.tokens > 48 and "혜나" in long.message


def test_memory_service_extracts_and_embeds(services):
    memory = stub(services["memory"], llm_pb2_grpc.MemoryServiceStub)
    extracted = memory.Extract(llm_pb2.ExtractRequest(final_input="나 내일 시험이야"), timeout=60)
    assert 1 <= extracted.stats.attempts <= 5
    if extracted.HasField("fact"):
        assert extracted.fact.text == f"[{extracted.fact.key}: {extracted.fact.value}]"
    embedded = memory.Embed(llm_pb2.EmbedRequest(texts=["[상태: 행복]", "오늘 기분 좋아"], kind="query"))
    assert embedded.dimension == 32 and embedded.embedder_id == "embedder"
    assert embedded.threshold == pytest.approx(0.9)
    assert [len(e.values) for e in embedded.embeddings] == [32, 32]
    norms = [sum(v * v for v in e.values) for e in embedded.embeddings]
    assert norms == pytest.approx([1.0, 1.0], abs=1e-4)


def test_summary_and_pose_services_answer(services):
    summary = stub(services["summary"], llm_pb2_grpc.SummaryServiceStub)
    summarized = summary.Summarize(llm_pb2.SummarizeRequest(final_input="로라야 안녕", reply=" 안녕! 반가워"), timeout=60)
    assert 1 <= summarized.stats.attempts <= 3
    assert summarized.HasField("summary") != summarized.stats.fallback
    pose = stub(services["pose"], llm_pb2_grpc.PoseServiceStub)
    decided = pose.DecideExpression(llm_pb2.PoseRequest(reply=" 안녕! 반가워"), timeout=60)
    assert decided.eyes_text in EYES_WORDS and decided.mouth_text in MOUTH_WORDS and decided.pose_text in POSE_WORDS
    assert -1.2 <= decided.expression.eyes <= 0.2
    assert -1.6 <= decided.expression.mouth <= -0.4
    assert -1.8 <= decided.expression.pose <= 0.6


BAD_REQUESTS = [
    ("message", llm_pb2_grpc.MessageServiceStub, "Reply", llm_pb2.ReplyRequest(final_input=""), "final_input is empty"),
    ("message", llm_pb2_grpc.MessageServiceStub, "Reply", llm_pb2.ReplyRequest(final_input="  \n "), "final_input is empty"),
    ("message", llm_pb2_grpc.MessageServiceStub, "Reply", llm_pb2.ReplyRequest(final_input="가" * 2001), "limit is 2000"),
    ("message", llm_pb2_grpc.MessageServiceStub, "CheckInput", llm_pb2.CheckInputRequest(), "text is empty"),
    ("memory", llm_pb2_grpc.MemoryServiceStub, "Extract", llm_pb2.ExtractRequest(), "final_input is empty"),
    ("memory", llm_pb2_grpc.MemoryServiceStub, "Embed", llm_pb2.EmbedRequest(), "texts is empty"),
    ("memory", llm_pb2_grpc.MemoryServiceStub, "Embed", llm_pb2.EmbedRequest(texts=["a"] * 257), "at most 256"),
    ("memory", llm_pb2_grpc.MemoryServiceStub, "Embed", llm_pb2.EmbedRequest(texts=["a", ""]), "texts[1] is empty"),
    ("memory", llm_pb2_grpc.MemoryServiceStub, "Embed", llm_pb2.EmbedRequest(texts=["a"], kind="doc"), "kind 'doc'"),
    ("summary", llm_pb2_grpc.SummaryServiceStub, "Summarize", llm_pb2.SummarizeRequest(final_input="안녕"), "reply is empty"),
    ("summary", llm_pb2_grpc.SummaryServiceStub, "Summarize", llm_pb2.SummarizeRequest(reply="안녕"), "final_input is empty"),
    ("pose", llm_pb2_grpc.PoseServiceStub, "DecideExpression", llm_pb2.PoseRequest(reply="a\x00b"), "NUL"),
]


@pytest.mark.parametrize("service,stub_cls,method,request_msg,expected", BAD_REQUESTS, ids=lambda v: getattr(v, "__name__", None))
def test_bad_input_is_invalid_argument(services, service, stub_cls, method, request_msg, expected):
    call = getattr(stub(services[service], stub_cls), method)
    with pytest.raises(grpc.RpcError) as info:
        result = call(request_msg, timeout=30)
        if not hasattr(result, "ByteSize"):
            list(result)  # a stream raises when iterated
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in info.value.details()
    assert health_status(services[service].address) == "SERVING"


def test_services_keep_serving_after_bad_input(services):
    memory = stub(services["memory"], llm_pb2_grpc.MemoryServiceStub)
    assert memory.Embed(llm_pb2.EmbedRequest(texts=["안녕"])).dimension == 32


def test_first_chunk_arrives_before_generation_ends(services):
    message = stub(services["message"], llm_pb2_grpc.MessageServiceStub)
    started = time.perf_counter()
    arrivals = []
    for chunk in message.Reply(llm_pb2.ReplyRequest(final_input="로라야 주말에 뭐 할 거야?"), timeout=60):
        arrivals.append((time.perf_counter() - started, chunk.WhichOneof("kind")))
    first, done = arrivals[0][0], arrivals[-1][0]
    assert arrivals[0][1] in ("delta", "reset") and arrivals[-1][1] == "done"
    assert sum(kind == "delta" for _, kind in arrivals) >= 2
    # Unbuffered streaming: the first chunk comes after one decoding step, not after all attempts.
    assert first < done / 2, arrivals[:3]


def test_request_id_is_echoed_and_logged(services):
    handle = services["pose"]
    message = stub(handle, llm_pb2_grpc.PoseServiceStub)
    _, call = message.DecideExpression.with_call(
        llm_pb2.PoseRequest(reply=" 좋아!"), metadata=(("x-request-id", "test-rid-42"),), timeout=60
    )
    assert ("x-request-id", "test-rid-42") in tuple(call.trailing_metadata())
    deadline = time.monotonic() + 5
    while '"request_id": "test-rid-42"' not in handle.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert '"request_id": "test-rid-42"' in handle.log()


def test_reflection_lists_the_service(services):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    db = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(services["summary"].address))
    names = set(db.get_services())
    assert {"ohlora.v1.SummaryService", "grpc.health.v1.Health"} <= names


def test_sigterm_finishes_the_in_flight_call_and_exits_zero(start_service, tiny_config):
    handle = start_service("serve", "llm_message", "--config", str(tiny_config))
    handle.wait_serving()
    message = llm_pb2_grpc.MessageServiceStub(grpc.insecure_channel(handle.address))
    stream = message.Reply(llm_pb2.ReplyRequest(final_input="로라야 오늘 뭐 해?"), timeout=60)
    first = next(stream)
    assert first.WhichOneof("kind") in ("delta", "reset")
    statuses: list[str] = []
    watcher = threading.Thread(target=lambda: statuses.extend(health_status(handle.address) for _ in range(5)))
    handle.proc.send_signal(15)
    watcher.start()
    rest = list(stream)
    watcher.join()
    assert rest and rest[-1].HasField("done"), "the in-flight reply must complete"
    assert handle.proc.wait(60) == 0
    assert "NOT_SERVING" in statuses, statuses
