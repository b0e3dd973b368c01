"""FaceService: lists faces and renders a batch of expressions for one face, streaming encoded frames."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator

import grpc
import numpy as np
from PIL import Image

from ohlora.config import FaceSettings
from ohlora.errors import InvalidInput, NotReady
from ohlora.runtime.server import ServiceBinding
from ohlora.v1 import common_pb2, face_pb2, face_pb2_grpc
from services.face.renderers import Renderer, load_renderer

log = logging.getLogger(__name__)
SERVICE_NAME = face_pb2.DESCRIPTOR.services_by_name["FaceService"].full_name


def encode(frame: np.ndarray, fmt: int, size: int, jpeg_quality: int) -> bytes:
    image = Image.fromarray(frame)
    if size and size != image.width:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if fmt == face_pb2.IMAGE_FORMAT_PNG:
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=jpeg_quality)
    return buffer.getvalue()


class FaceHost:
    """The renderer behind the servicer, loaded after the port opens."""

    def __init__(self, settings: FaceSettings) -> None:
        self.settings = settings
        self.renderer: Renderer | None = None
        self.render_lock = asyncio.Lock()

    async def load(self) -> None:
        renderer = await asyncio.to_thread(load_renderer, self.settings)
        await asyncio.to_thread(renderer.render, renderer.face_ids()[0], np.zeros((2, 3)))
        self.renderer = renderer
        log.info("face renderer ready", extra={"fields": {"renderer": renderer.name, "faces": len(renderer.face_ids())}})

    def require(self) -> Renderer:
        if self.renderer is None:
            raise NotReady("the face renderer is still loading; retry when health reports SERVING")
        return self.renderer

    def validate(self, request: face_pb2.RenderRequest) -> tuple[Renderer, np.ndarray, int]:
        renderer = self.require()
        s = self.settings
        if request.face_id not in renderer.face_ids():
            raise InvalidInput(f"face_id {request.face_id} is unknown; ListFaces gives the {len(renderer.face_ids())} faces")
        n = len(request.expressions)
        if n == 0 or n > s.max_batch:
            raise InvalidInput(f"{n} expressions sent; send 1 to {s.max_batch} per call")
        weights = np.array([[e.eyes, e.mouth, e.pose] for e in request.expressions], dtype=np.float64)
        bad = np.argwhere(~np.isfinite(weights) | (np.abs(weights) > s.max_weight))
        if len(bad):
            i, j = bad[0]
            raise InvalidInput(
                f"expressions[{i}].{('eyes', 'mouth', 'pose')[j]} = {weights[i, j]} must be finite and within ±{s.max_weight}"
            )
        size = request.size or renderer.native_size
        if not s.min_size <= size <= s.max_size:
            raise InvalidInput(f"size {size} must be between {s.min_size} and {s.max_size} pixels (0 = native)")
        if request.format not in (face_pb2.IMAGE_FORMAT_UNSPECIFIED, face_pb2.IMAGE_FORMAT_JPEG, face_pb2.IMAGE_FORMAT_PNG):
            raise InvalidInput(f"format {request.format} is unknown; use JPEG or PNG")
        return renderer, weights, size


class FaceServicer(face_pb2_grpc.FaceServiceServicer):
    def __init__(self, host: FaceHost) -> None:
        self.host = host

    async def ListFaces(self, request: face_pb2.ListFacesRequest, context: grpc.aio.ServicerContext) -> face_pb2.ListFacesResponse:
        renderer = self.host.require()
        faces = [face_pb2.FaceInfo(face_id=i, description=renderer.describe(i)) for i in renderer.face_ids()]
        return face_pb2.ListFacesResponse(faces=faces, renderer=renderer.name)

    async def Render(self, request: face_pb2.RenderRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[face_pb2.Frame]:
        renderer, weights, size = self.host.validate(request)
        fmt = request.format or face_pb2.IMAGE_FORMAT_JPEG
        async with self.host.render_lock:  # one forward pass at a time; batches are the unit of work
            frames = await asyncio.to_thread(renderer.render, request.face_id, weights)
        quality = self.host.settings.jpeg_quality
        for index, (frame, (e, m, p)) in enumerate(zip(frames, weights)):
            data = await asyncio.to_thread(encode, frame, fmt, size, quality)
            yield face_pb2.Frame(
                index=index, expression=common_pb2.Expression(eyes=e, mouth=m, pose=p), format=fmt,
                image=data, width=size, height=size,
            )


def binding(host: FaceHost) -> ServiceBinding:
    return ServiceBinding(SERVICE_NAME, lambda server: face_pb2_grpc.add_FaceServiceServicer_to_server(FaceServicer(host), server))
