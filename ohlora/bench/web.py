"""web-overhead: the same turns through the web tier's OpenAI-compatible API and straight to the gateway.

One local stack of real processes (as gateway-overhead: tiny models fine-tuned at start-up, wider than the
tests'), one `ohlora serve web` in front of its gateway. Turns alternate between the two paths, each by a new
user (no memory or summary, so both send the model the same input); the figure is the median time until the
client holds the whole reply: the gateway's reply_final event, or the end of the web tier's SSE stream
(which ends right after it, with the token counts).
"""

from __future__ import annotations

import time

import grpc
import httpx

from ohlora.bench import SuiteResult, side_by_side
from ohlora.bench.gateway import TURNS, _fresh_user, _stack
from ohlora.chat import call_metadata
from ohlora.v1 import gateway_pb2, gateway_pb2_grpc


def gateway_reply(stub: gateway_pb2_grpc.GatewayStub, text: str, user: str) -> float:
    """Seconds until the gateway's reply_final; the rest of the turn is left to settle in the gateway, as a client does."""
    started = time.perf_counter()
    call = stub.Chat(gateway_pb2.ChatRequest(text=text), metadata=call_metadata(user, None))
    try:
        for event in call:
            if event.HasField("reply_final"):
                return time.perf_counter() - started
            if event.HasField("error"):
                raise RuntimeError(event.error.message)
    finally:
        call.cancel()
    raise RuntimeError("the turn gave no reply")


def web_reply(client: httpx.Client, text: str, user: str) -> float:
    """Seconds until the web tier's streamed completion ends (the whole reply is in)."""
    body = {"model": "ohlora", "messages": [{"role": "user", "content": text}], "user": user, "stream": True}
    started = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line == "data: [DONE]":
                return time.perf_counter() - started
    raise RuntimeError("the stream ended without [DONE]")


def settle(stub: gateway_pb2_grpc.GatewayStub, user: str, seconds: float = 120.0) -> None:
    """Waits until the user's turn has ended (memory and summary written), so the next measured turn does not
    share the CPU with this one's background work."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        listed = stub.ListTurns(gateway_pb2.ListTurnsRequest(limit=1), metadata=call_metadata(user, None)).turns
        if listed and listed[0].ended:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the turn of {user} did not settle in {seconds} s")


def web_overhead(quick: bool) -> SuiteResult:
    stack, _ = _stack(quick)
    try:
        web = stack.web(stack.main.address)
        stub = gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(stack.main.address))
        client = httpx.Client(base_url=f"http://{web.address}", timeout=300)
        paths = {"web": lambda text, user: web_reply(client, text, user),
                 "gateway": lambda text, user: gateway_reply(stub, text, user)}
        times: dict[str, list[float]] = {"web": [], "gateway": []}
        for i in range(1 + (4 if quick else 15)):  # round 0 warms both paths up
            for text in TURNS:
                for name in (("web", "gateway") if i % 2 else ("gateway", "web")):  # alternate which goes first
                    user = _fresh_user()
                    took = paths[name](text, user)
                    settle(stub, user)
                    if i:
                        times[name].append(took)
        return side_by_side(
            "median s to the whole reply", "web_overhead_ratio",
            ("OpenAI API of `ohlora serve web` (SSE)", times["web"]), ("gRPC straight to the gateway", times["gateway"]),
            ["each turn by a new user, measured once the previous turn has settled; the web tier adds one HTTP hop, "
             "JSON/SSE encoding and one more gRPC client; tiny GPT-NeoX (hidden 256, 4 layers) with LoRA adapters "
             "fine-tuned at start-up"],
        )
    finally:
        stack.close()
