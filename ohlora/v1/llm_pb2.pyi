from ohlora.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplyRequest(_message.Message):
    __slots__ = ("final_input",)
    FINAL_INPUT_FIELD_NUMBER: _ClassVar[int]
    final_input: str
    def __init__(self, final_input: _Optional[str] = ...) -> None: ...

class ReplyReset(_message.Message):
    __slots__ = ("attempt", "reason")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    reason: str
    def __init__(self, attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ReplyDone(_message.Message):
    __slots__ = ("text", "stats")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    text: str
    stats: _common_pb2.GenerationStats
    def __init__(self, text: _Optional[str] = ..., stats: _Optional[_Union[_common_pb2.GenerationStats, _Mapping]] = ...) -> None: ...

class ReplyChunk(_message.Message):
    __slots__ = ("delta", "reset", "done")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    delta: str
    reset: ReplyReset
    done: ReplyDone
    def __init__(self, delta: _Optional[str] = ..., reset: _Optional[_Union[ReplyReset, _Mapping]] = ..., done: _Optional[_Union[ReplyDone, _Mapping]] = ...) -> None: ...

class CheckInputRequest(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class CheckInputResponse(_message.Message):
    __slots__ = ("ok", "tokens", "limit", "message")
    OK_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    tokens: int
    limit: int
    message: str
    def __init__(self, ok: _Optional[bool] = ..., tokens: _Optional[int] = ..., limit: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ExtractRequest(_message.Message):
    __slots__ = ("final_input",)
    FINAL_INPUT_FIELD_NUMBER: _ClassVar[int]
    final_input: str
    def __init__(self, final_input: _Optional[str] = ...) -> None: ...

class MemoryFact(_message.Message):
    __slots__ = ("key", "value", "text")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    text: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ExtractResponse(_message.Message):
    __slots__ = ("fact", "stats")
    FACT_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    fact: MemoryFact
    stats: _common_pb2.GenerationStats
    def __init__(self, fact: _Optional[_Union[MemoryFact, _Mapping]] = ..., stats: _Optional[_Union[_common_pb2.GenerationStats, _Mapping]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("texts", "kind")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    kind: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., kind: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "embedder_id", "dimension", "threshold", "lexical_weight")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_ID_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    embedder_id: str
    dimension: int
    threshold: float
    lexical_weight: float
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., embedder_id: _Optional[str] = ..., dimension: _Optional[int] = ..., threshold: _Optional[float] = ..., lexical_weight: _Optional[float] = ...) -> None: ...

class SummarizeRequest(_message.Message):
    __slots__ = ("final_input", "reply")
    FINAL_INPUT_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    final_input: str
    reply: str
    def __init__(self, final_input: _Optional[str] = ..., reply: _Optional[str] = ...) -> None: ...

class SummarizeResponse(_message.Message):
    __slots__ = ("summary", "stats")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    summary: str
    stats: _common_pb2.GenerationStats
    def __init__(self, summary: _Optional[str] = ..., stats: _Optional[_Union[_common_pb2.GenerationStats, _Mapping]] = ...) -> None: ...

class PoseRequest(_message.Message):
    __slots__ = ("reply",)
    REPLY_FIELD_NUMBER: _ClassVar[int]
    reply: str
    def __init__(self, reply: _Optional[str] = ...) -> None: ...

class PoseResponse(_message.Message):
    __slots__ = ("eyes_text", "mouth_text", "pose_text", "expression", "stats")
    EYES_TEXT_FIELD_NUMBER: _ClassVar[int]
    MOUTH_TEXT_FIELD_NUMBER: _ClassVar[int]
    POSE_TEXT_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    eyes_text: str
    mouth_text: str
    pose_text: str
    expression: _common_pb2.Expression
    stats: _common_pb2.GenerationStats
    def __init__(self, eyes_text: _Optional[str] = ..., mouth_text: _Optional[str] = ..., pose_text: _Optional[str] = ..., expression: _Optional[_Union[_common_pb2.Expression, _Mapping]] = ..., stats: _Optional[_Union[_common_pb2.GenerationStats, _Mapping]] = ...) -> None: ...
