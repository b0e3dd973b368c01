"""Consolidated mode: four tasks on one base in one process; a full queue; metrics."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc

from ohlora.client import free_port
from ohlora.v1 import llm_pb2, llm_pb2_grpc


def test_one_process_serves_all_four_tasks(start_service, tiny_config):
    metrics_port = free_port()
    handle = start_service(
        "serve", "llm", "--tasks", "message,memory,summary,pose", "--config", str(tiny_config),
        env={"OHLORA_SERVER__METRICS_PORT": str(metrics_port)},
    )
    handle.wait_serving()
    channel = grpc.insecure_channel(handle.address)
    chunks = list(llm_pb2_grpc.MessageServiceStub(channel).Reply(llm_pb2.ReplyRequest(final_input="안녕"), timeout=60))
    assert chunks[-1].HasField("done")
    assert llm_pb2_grpc.MemoryServiceStub(channel).Extract(llm_pb2.ExtractRequest(final_input="안녕")).stats.attempts >= 1
    assert llm_pb2_grpc.SummaryServiceStub(channel).Summarize(
        llm_pb2.SummarizeRequest(final_input="안녕", reply=" 안녕!")
    ).stats.attempts >= 1
    assert llm_pb2_grpc.PoseServiceStub(channel).DecideExpression(llm_pb2.PoseRequest(reply=" 안녕!")).eyes_text
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert 'ohlora_rpc_requests_total{code="OK",method="/ohlora.v1.PoseService/DecideExpression"} 1.0' in body
    assert "ohlora_llm_generated_tokens_total" in body and "ohlora_task_attempts_bucket" in body
    assert handle.terminate() == 0


def test_full_queue_answers_resource_exhausted_and_recovers(start_service, tiny_config):
    handle = start_service(
        "serve", "llm", "--tasks", "message", "--config", str(tiny_config),
        env={"OHLORA_LLM__MAX_QUEUE": "1", "OHLORA_LLM__MAX_BATCH_SIZE": "1"},
    )
    handle.wait_serving()
    message = llm_pb2_grpc.MessageServiceStub(grpc.insecure_channel(handle.address))

    def reply(i: int) -> str:
        try:
            list(message.Reply(llm_pb2.ReplyRequest(final_input=f"로라야 {i}"), timeout=120))
            return "OK"
        except grpc.RpcError as exc:
            assert "queue is full" in exc.details()
            return exc.code().name

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(reply, range(8)))
    assert "RESOURCE_EXHAUSTED" in codes and "OK" in codes
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
    assert reply(99) == "OK", "the server keeps serving once the queue drains"


def test_message_size_limit_is_enforced(start_service, tiny_config):
    handle = start_service("serve", "llm_pose", "--config", str(tiny_config), env={"OHLORA_SERVER__MAX_MESSAGE_BYTES": "4096"})
    handle.wait_serving()
    pose = llm_pb2_grpc.PoseServiceStub(grpc.insecure_channel(handle.address))
    try:
        pose.DecideExpression(llm_pb2.PoseRequest(reply="가" * 3000), timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    else:
        raise AssertionError("a 9 KB request must be refused by a 4 KB limit")
    assert pose.DecideExpression(llm_pb2.PoseRequest(reply=" 좋아!"), timeout=60).eyes_text
