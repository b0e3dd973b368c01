"""Channels and stubs to the model services, with gRPC-native retries for idempotent calls."""

from __future__ import annotations

import json

import grpc

from ohlora.config import GatewaySettings
from ohlora.runtime import tls
from ohlora.v1 import face_pb2_grpc, llm_pb2_grpc

# Calls without side effects and without streamed output retry on UNAVAILABLE (a replica
# restarting, a connection reset). Reply is never retried: text may already be on screen.
RETRYABLE = [
    {"service": "ohlora.v1.MessageService", "method": "CheckInput"},
    {"service": "ohlora.v1.MemoryService", "method": "Embed"},
    {"service": "ohlora.v1.MemoryService", "method": "Extract"},
    {"service": "ohlora.v1.SummaryService", "method": "Summarize"},
    {"service": "ohlora.v1.PoseService", "method": "DecideExpression"},
    {"service": "ohlora.v1.FaceService", "method": "ListFaces"},
    {"service": "ohlora.v1.FaceService", "method": "Render"},
]
SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": RETRYABLE,
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)
CHANNEL_OPTIONS = [
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # A restarted service is used again within a second (gRPC's default backoff grows to 120 s while it is down).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class Downstream:
    """One channel per distinct address (four tasks in one consolidated process share one)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._channels: dict[str, grpc.aio.Channel] = {}
        # TLS (or mutual TLS) to every model service when a CA is configured, e.g. across hosts.
        self._credentials = tls.channel_credentials(settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)
        self.message = llm_pb2_grpc.MessageServiceStub(self._channel(settings.message_address))
        self.memory = llm_pb2_grpc.MemoryServiceStub(self._channel(settings.memory_address))
        self.summary = llm_pb2_grpc.SummaryServiceStub(self._channel(settings.summary_address))
        self.pose = llm_pb2_grpc.PoseServiceStub(self._channel(settings.pose_address))
        self.face = face_pb2_grpc.FaceServiceStub(self._channel(settings.face_address))

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            # dns:/// lets a headless service's several replicas share the load (round robin).
            target = address if "://" in address or address.startswith("dns:") else f"dns:///{address}"
            if self._credentials is None:
                self._channels[address] = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            else:
                options = CHANNEL_OPTIONS + tls.name_override(self.settings.tls_server_name)
                self._channels[address] = grpc.aio.secure_channel(target, self._credentials, options=options)
        return self._channels[address]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
