from ohlora.v1 import common_pb2 as _common_pb2
from ohlora.v1 import face_pb2 as _face_pb2
from ohlora.v1 import llm_pb2 as _llm_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatRequest(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "ms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    ms: float
    def __init__(self, stage: _Optional[str] = ..., ms: _Optional[float] = ...) -> None: ...

class ChatEvent(_message.Message):
    __slots__ = ("reply_delta", "reply_reset", "reply_final", "expression", "warning", "error", "timing", "usage", "turn_id")
    REPLY_DELTA_FIELD_NUMBER: _ClassVar[int]
    REPLY_RESET_FIELD_NUMBER: _ClassVar[int]
    REPLY_FINAL_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    reply_delta: str
    reply_reset: _llm_pb2.ReplyReset
    reply_final: str
    expression: _common_pb2.Expression
    warning: str
    error: ChatError
    timing: StageTiming
    usage: Usage
    turn_id: str
    def __init__(self, reply_delta: _Optional[str] = ..., reply_reset: _Optional[_Union[_llm_pb2.ReplyReset, _Mapping]] = ..., reply_final: _Optional[str] = ..., expression: _Optional[_Union[_common_pb2.Expression, _Mapping]] = ..., warning: _Optional[str] = ..., error: _Optional[_Union[ChatError, _Mapping]] = ..., timing: _Optional[_Union[StageTiming, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., turn_id: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class ChatError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("fps", "format", "size")
    FPS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    fps: float
    format: _face_pb2.ImageFormat
    size: int
    def __init__(self, fps: _Optional[float] = ..., format: _Optional[_Union[_face_pb2.ImageFormat, str]] = ..., size: _Optional[int] = ...) -> None: ...

class Memory(_message.Message):
    __slots__ = ("id", "key", "value", "text", "created", "turn_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    key: str
    value: str
    text: str
    created: float
    turn_id: str
    def __init__(self, id: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[str] = ..., text: _Optional[str] = ..., created: _Optional[float] = ..., turn_id: _Optional[str] = ...) -> None: ...

class ListMemoriesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMemoriesResponse(_message.Message):
    __slots__ = ("memories",)
    MEMORIES_FIELD_NUMBER: _ClassVar[int]
    memories: _containers.RepeatedCompositeFieldContainer[Memory]
    def __init__(self, memories: _Optional[_Iterable[_Union[Memory, _Mapping]]] = ...) -> None: ...

class AddMemoryRequest(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class ForgetMemoryRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ForgetMemoryResponse(_message.Message):
    __slots__ = ("forgotten",)
    FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    forgotten: bool
    def __init__(self, forgotten: _Optional[bool] = ...) -> None: ...

class ImportMemoriesRequest(_message.Message):
    __slots__ = ("content",)
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    content: str
    def __init__(self, content: _Optional[str] = ...) -> None: ...

class ImportMemoriesResponse(_message.Message):
    __slots__ = ("added", "skipped")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    added: int
    skipped: int
    def __init__(self, added: _Optional[int] = ..., skipped: _Optional[int] = ...) -> None: ...

class ExportMemoriesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExportMemoriesResponse(_message.Message):
    __slots__ = ("content",)
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    content: str
    def __init__(self, content: _Optional[str] = ...) -> None: ...

class ChooseFaceRequest(_message.Message):
    __slots__ = ("face_id",)
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    face_id: int
    def __init__(self, face_id: _Optional[int] = ...) -> None: ...

class FacesRequest(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class FaceThumbnail(_message.Message):
    __slots__ = ("face_id", "description", "image")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    face_id: int
    description: str
    image: bytes
    def __init__(self, face_id: _Optional[int] = ..., description: _Optional[str] = ..., image: _Optional[bytes] = ...) -> None: ...

class FacesResponse(_message.Message):
    __slots__ = ("faces", "chosen")
    FACES_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[FaceThumbnail]
    chosen: int
    def __init__(self, faces: _Optional[_Iterable[_Union[FaceThumbnail, _Mapping]]] = ..., chosen: _Optional[int] = ...) -> None: ...

class ChooseFaceResponse(_message.Message):
    __slots__ = ("face_id", "random")
    FACE_ID_FIELD_NUMBER: _ClassVar[int]
    RANDOM_FIELD_NUMBER: _ClassVar[int]
    face_id: int
    random: bool
    def __init__(self, face_id: _Optional[int] = ..., random: _Optional[bool] = ...) -> None: ...

class ResetSummaryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetSummaryResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Turn(_message.Message):
    __slots__ = ("turn_id", "user_text", "final_input", "reply", "status", "memory_written", "summary", "expression", "errors", "started", "ended")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_TEXT_FIELD_NUMBER: _ClassVar[int]
    FINAL_INPUT_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    user_text: str
    final_input: str
    reply: str
    status: str
    memory_written: str
    summary: str
    expression: _common_pb2.Expression
    errors: _containers.RepeatedScalarFieldContainer[str]
    started: float
    ended: float
    def __init__(self, turn_id: _Optional[str] = ..., user_text: _Optional[str] = ..., final_input: _Optional[str] = ..., reply: _Optional[str] = ..., status: _Optional[str] = ..., memory_written: _Optional[str] = ..., summary: _Optional[str] = ..., expression: _Optional[_Union[_common_pb2.Expression, _Mapping]] = ..., errors: _Optional[_Iterable[str]] = ..., started: _Optional[float] = ..., ended: _Optional[float] = ...) -> None: ...

class ListTurnsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListTurnsResponse(_message.Message):
    __slots__ = ("turns",)
    TURNS_FIELD_NUMBER: _ClassVar[int]
    turns: _containers.RepeatedCompositeFieldContainer[Turn]
    def __init__(self, turns: _Optional[_Iterable[_Union[Turn, _Mapping]]] = ...) -> None: ...
