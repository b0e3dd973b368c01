"""FaceService as a real subprocess: sketch and full-size StyleGAN renderers, batches, bad requests."""

from __future__ import annotations

import io
import math

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from ohlora.client import health_status
from ohlora.v1 import common_pb2, face_pb2, face_pb2_grpc
from services.face.face_data import GROUPS, PASSED_OHLORA_NOS, PROPERTIES, write_face_data
from services.face.stylegan import StyleGANGenerator


@pytest.fixture(scope="module")
def sketch_service(tmp_path_factory):
    from ohlora.client import ServiceProcessHandle, free_port

    handle = ServiceProcessHandle(["serve", "face"], free_port(), tmp_path_factory.mktemp("face") / "face.log")
    handle.wait_serving()
    yield handle
    assert handle.terminate() == 0


def stub(handle) -> face_pb2_grpc.FaceServiceStub:
    return face_pb2_grpc.FaceServiceStub(grpc.insecure_channel(handle.address))


def expressions(*rows: tuple[float, float, float]) -> list[common_pb2.Expression]:
    return [common_pb2.Expression(eyes=e, mouth=m, pose=p) for e, m, p in rows]


def test_a_cpu_service_keeps_freed_memory_in_its_heap(sketch_service):
    """`ohlora serve` sets the heap up for CPU models before threads start (ohlora/runtime/cpu_memory.py)."""
    assert "freed memory is kept in the heap" in sketch_service.log_path.read_text()


def test_lists_the_sketch_faces(sketch_service):
    listed = stub(sketch_service).ListFaces(face_pb2.ListFacesRequest())
    assert listed.renderer == "sketch" and [f.face_id for f in listed.faces] == list(range(6))
    assert all(f.description for f in listed.faces)


def test_renders_a_batch_in_order_as_png_and_jpeg(sketch_service):
    rows = [(0.2, 1.0, 0.0), (-1.1, -1.4, 0.0), (0.2, 1.0, -1.5), (1.2, 1.0, 0.0)]
    frames = list(stub(sketch_service).Render(face_pb2.RenderRequest(
        face_id=3, expressions=expressions(*rows), format=face_pb2.IMAGE_FORMAT_PNG, size=128), timeout=30))
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [(round(f.expression.eyes, 3), round(f.expression.mouth, 3), round(f.expression.pose, 3)) for f in frames] == rows
    images = [np.asarray(Image.open(io.BytesIO(f.image))) for f in frames]
    assert all(img.shape == (128, 128, 3) and f.width == 128 for img, f in zip(images, frames))
    assert len({img.tobytes() for img in images}) == 4, "each expression gives its own frame"
    jpeg = next(iter(stub(sketch_service).Render(face_pb2.RenderRequest(face_id=0, expressions=expressions(rows[0])))))
    assert jpeg.format == face_pb2.IMAGE_FORMAT_JPEG and jpeg.image[:2] == b"\xff\xd8" and jpeg.width == 256


BAD = [
    (dict(face_id=99, expressions=expressions((0, 0, 0))), "face_id 99 is unknown"),
    (dict(face_id=0, expressions=[]), "0 expressions sent"),
    (dict(face_id=0, expressions=expressions(*[(0, 0, 0)] * 129)), "129 expressions sent"),
    (dict(face_id=0, expressions=expressions((math.nan, 0, 0))), "expressions[0].eyes = nan"),
    (dict(face_id=0, expressions=expressions((0, 0, 0), (0, 0, math.inf))), "expressions[1].pose = inf"),
    (dict(face_id=0, expressions=expressions((0, 1e6, 0))), "within ±5"),
    (dict(face_id=0, expressions=expressions((0, 0, 0)), size=8), "size 8 must be between"),
    (dict(face_id=0, expressions=expressions((0, 0, 0)), size=5000), "size 5000 must be between"),
    (dict(face_id=0, expressions=expressions((0, 0, 0)), format=7), "format 7 is unknown"),
]


@pytest.mark.parametrize("fields,message", BAD, ids=[m for _, m in BAD])
def test_bad_render_requests_are_invalid_argument(sketch_service, fields, message):
    with pytest.raises(grpc.RpcError) as info:
        list(stub(sketch_service).Render(face_pb2.RenderRequest(**fields), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert health_status(sketch_service.address) == "SERVING"


def test_stylegan_service_loads_a_full_size_checkpoint(start_service, tmp_path):
    """Random full-size weights saved in the original's format, 27 faces in its file formats."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "stylegan_gen_vector_find_v7.pth"
    torch.save(StyleGANGenerator().state_dict(), checkpoint)
    rng = np.random.default_rng(0)
    vectors = {(p, g): (lambda v: v / np.linalg.norm(v))(rng.standard_normal(512)) for p in PROPERTIES for g in GROUPS}
    groups = [GROUPS[i % 8] for i in range(27)]
    write_face_data(tmp_path / "faces", np.round(rng.standard_normal((27, 515)), 4), list(PASSED_OHLORA_NOS), groups, vectors)
    handle = start_service("serve", "face", env={
        "OHLORA_FACE__RENDERER": "stylegan",
        "OHLORA_FACE__CHECKPOINT": str(checkpoint),
        "OHLORA_FACE__FACE_DATA": str(tmp_path / "faces"),
        "OHLORA_FACE__DTYPE": "float32",
    })
    handle.wait_serving()
    listed = stub(handle).ListFaces(face_pb2.ListFacesRequest())
    assert listed.renderer == "stylegan" and [f.face_id for f in listed.faces] == list(PASSED_OHLORA_NOS)
    frames = list(stub(handle).Render(face_pb2.RenderRequest(
        face_id=1277, expressions=expressions((0, 0, 0), (-1.0, -1.4, -1.5)), format=face_pb2.IMAGE_FORMAT_PNG), timeout=120))
    images = [np.asarray(Image.open(io.BytesIO(f.image))).astype(int) for f in frames]
    assert images[0].shape == (256, 256, 3) and np.abs(images[0] - images[1]).mean() > 0
    with pytest.raises(grpc.RpcError) as info:
        list(stub(handle).Render(face_pb2.RenderRequest(face_id=5, expressions=expressions((0, 0, 0)))))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_bad_checkpoint_stops_the_service_with_the_key_named(start_service, tmp_path):
    state = StyleGANGenerator().state_dict()
    state.pop("synthesis.layer3.apply_noise.weight")
    torch.save(state, tmp_path / "bad.pth")
    handle = start_service("serve", "face", env={
        "OHLORA_FACE__RENDERER": "stylegan", "OHLORA_FACE__CHECKPOINT": str(tmp_path / "bad.pth"),
        "OHLORA_FACE__FACE_DATA": str(tmp_path / "nothing"),
    })
    assert handle.proc.wait(120) != 0
    assert "lacks key 'synthesis.layer3.apply_noise.weight'" in handle.log()


def test_faces_command_writes_the_contact_sheet_and_grid(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ohlora.cli", "faces", "--out", str(tmp_path), "--face", "4"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sheet = Image.open(tmp_path / "faces.png")
    grid = Image.open(tmp_path / "face-4-expressions.png")
    assert sheet.size == (6 * 128, 128 + 16)
    assert grid.size == (4 * (4 * 128) + 3 * 8, 4 * (128 + 16))
    cells = [np.asarray(grid.crop((x * 128, 0, x * 128 + 128, 128))) for x in range(4)]
    assert len({c.tobytes() for c in cells}) == 4, "each mouth weight gives a different face"
    bad = subprocess.run([sys.executable, "-m", "ohlora.cli", "faces", "--out", str(tmp_path), "--face", "77"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "face 77 is unknown" in bad.stderr
