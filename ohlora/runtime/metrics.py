"""Prometheus metrics of every service (scraped from /metrics on the metrics port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_REQUESTS = Counter("ohlora_rpc_requests_total", "RPCs handled", ["method", "code"])
RPC_LATENCY = Histogram(
    "ohlora_rpc_seconds", "RPC latency", ["method"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
)
QUEUE_DEPTH = Gauge("ohlora_llm_queue_depth", "Requests waiting for a batch", ["engine"])
QUEUE_REJECTIONS = Counter("ohlora_llm_queue_rejections_total", "Requests refused with a full queue", ["engine"])
GENERATED_TOKENS = Counter("ohlora_llm_generated_tokens_total", "Tokens generated", ["engine"])
TOKENS_PER_SECOND = Gauge("ohlora_llm_tokens_per_second", "Tokens/s of the last batch", ["engine"])
BATCH_SIZE = Histogram("ohlora_llm_batch_size", "Rows per batch", ["engine"], buckets=(1, 2, 4, 8, 16, 32))
TASK_ATTEMPTS = Histogram("ohlora_task_attempts", "Attempts per task call", ["task"], buckets=(1, 2, 3, 5, 10, 15))
TASK_FALLBACKS = Counter("ohlora_task_fallbacks_total", "Task calls that ended in the fallback", ["task"])


def serve_metrics(port: int, host: str = "0.0.0.0") -> int:
    """Starts the /metrics HTTP endpoint; port 0 picks a free port. Returns the port."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_port
