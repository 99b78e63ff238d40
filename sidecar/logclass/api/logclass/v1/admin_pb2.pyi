from logclass.api.logclass.v1 import classifier_pb2 as _classifier_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReloadRequest(_message.Message):
    __slots__ = ("parts",)
    PARTS_FIELD_NUMBER: _ClassVar[int]
    parts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, parts: _Optional[_Iterable[str]] = ...) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("changed", "model_version", "rules_sha256")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RULES_SHA256_FIELD_NUMBER: _ClassVar[int]
    changed: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    rules_sha256: str
    def __init__(self, changed: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., rules_sha256: _Optional[str] = ...) -> None: ...

class Correction(_message.Message):
    __slots__ = ("record", "label", "this_source_only")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    THIS_SOURCE_ONLY_FIELD_NUMBER: _ClassVar[int]
    record: _classifier_pb2.LogRecord
    label: str
    this_source_only: bool
    def __init__(self, record: _Optional[_Union[_classifier_pb2.LogRecord, _Mapping]] = ..., label: _Optional[str] = ..., this_source_only: _Optional[bool] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("corrections",)
    CORRECTIONS_FIELD_NUMBER: _ClassVar[int]
    corrections: _containers.RepeatedCompositeFieldContainer[Correction]
    def __init__(self, corrections: _Optional[_Iterable[_Union[Correction, _Mapping]]] = ...) -> None: ...

class LessonKey(_message.Message):
    __slots__ = ("scope", "template")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    scope: str
    template: str
    def __init__(self, scope: _Optional[str] = ..., template: _Optional[str] = ...) -> None: ...

class Lesson(_message.Message):
    __slots__ = ("key", "label", "confidence", "origin", "model", "source", "example")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    key: LessonKey
    label: str
    confidence: float
    origin: str
    model: str
    source: str
    example: str
    def __init__(self, key: _Optional[_Union[LessonKey, _Mapping]] = ..., label: _Optional[str] = ..., confidence: _Optional[float] = ..., origin: _Optional[str] = ..., model: _Optional[str] = ..., source: _Optional[str] = ..., example: _Optional[str] = ...) -> None: ...

class ListLessonsRequest(_message.Message):
    __slots__ = ("origin", "scope", "limit")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    origin: str
    scope: str
    limit: int
    def __init__(self, origin: _Optional[str] = ..., scope: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListLessonsResponse(_message.Message):
    __slots__ = ("lessons", "total")
    LESSONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    lessons: _containers.RepeatedCompositeFieldContainer[Lesson]
    total: int
    def __init__(self, lessons: _Optional[_Iterable[_Union[Lesson, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class DropLessonsRequest(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[LessonKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[LessonKey, _Mapping]]] = ...) -> None: ...

class DropLessonsResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: _containers.RepeatedCompositeFieldContainer[Lesson]
    def __init__(self, dropped: _Optional[_Iterable[_Union[Lesson, _Mapping]]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_classifier_pb2.ClassifyResult]
    def __init__(self, results: _Optional[_Iterable[_Union[_classifier_pb2.ClassifyResult, _Mapping]]] = ...) -> None: ...
