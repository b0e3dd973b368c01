from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GenerationStats(_message.Message):
    __slots__ = ("attempts", "generated_tokens", "elapsed_ms", "fallback", "prompt_tokens")
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    attempts: int
    generated_tokens: int
    elapsed_ms: float
    fallback: bool
    prompt_tokens: int
    def __init__(self, attempts: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., elapsed_ms: _Optional[float] = ..., fallback: _Optional[bool] = ..., prompt_tokens: _Optional[int] = ...) -> None: ...

class Expression(_message.Message):
    __slots__ = ("eyes", "mouth", "pose")
    EYES_FIELD_NUMBER: _ClassVar[int]
    MOUTH_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    eyes: float
    mouth: float
    pose: float
    def __init__(self, eyes: _Optional[float] = ..., mouth: _Optional[float] = ..., pose: _Optional[float] = ...) -> None: ...
