from ohlora.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_JPEG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_JPEG: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat

class ListFacesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FaceInfo(_message.Message):
    __slots__ = ("face_id", "description")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    face_id: int
    description: str
    def __init__(self, face_id: _Optional[int] = ..., description: _Optional[str] = ...) -> None: ...

class ListFacesResponse(_message.Message):
    __slots__ = ("faces", "renderer")
    FACES_FIELD_NUMBER: _ClassVar[int]
    RENDERER_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[FaceInfo]
    renderer: str
    def __init__(self, faces: _Optional[_Iterable[_Union[FaceInfo, _Mapping]]] = ..., renderer: _Optional[str] = ...) -> None: ...

class RenderRequest(_message.Message):
    __slots__ = ("face_id", "expressions", "format", "size")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    face_id: int
    expressions: _containers.RepeatedCompositeFieldContainer[_common_pb2.Expression]
    format: ImageFormat
    size: int
    def __init__(self, face_id: _Optional[int] = ..., expressions: _Optional[_Iterable[_Union[_common_pb2.Expression, _Mapping]]] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., size: _Optional[int] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("index", "expression", "format", "image", "width", "height")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    index: int
    expression: _common_pb2.Expression
    format: ImageFormat
    image: bytes
    width: int
    height: int
    def __init__(self, index: _Optional[int] = ..., expression: _Optional[_Union[_common_pb2.Expression, _Mapping]] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., image: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...
