"""The committed stubs are exactly what protoc makes from proto/ today."""

from __future__ import annotations

from pathlib import Path

from ohlora.protogen import PACKAGE_DIR, REPO_ROOT, generate


def test_committed_stubs_match_regenerated(tmp_path: Path):
    generated = generate(tmp_path)
    assert {p.name for p in generated} >= {"llm_pb2.py", "llm_pb2_grpc.py", "face_pb2.py", "gateway_pb2.py", "common_pb2.py"}
    committed_dir = REPO_ROOT / PACKAGE_DIR
    committed = {p.name for p in committed_dir.iterdir() if p.is_file()}
    assert committed == {p.name for p in generated}, "stale or missing stub files: run `make proto`"
    for path in generated:
        assert (committed_dir / path.name).read_text() == path.read_text(), f"{path.name} is stale: run `make proto`"


def test_stubs_import_as_ohlora_v1():
    from ohlora.v1 import face_pb2_grpc, gateway_pb2_grpc, llm_pb2

    assert llm_pb2.DESCRIPTOR.package == "ohlora.v1"
    assert hasattr(gateway_pb2_grpc, "GatewayStub") and hasattr(face_pb2_grpc, "FaceServiceStub")
