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
    __slots__ = ("record", "label")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    record: _classifier_pb2.LogRecord
    label: str
    def __init__(self, record: _Optional[_Union[_classifier_pb2.LogRecord, _Mapping]] = ..., label: _Optional[str] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("corrections",)
    CORRECTIONS_FIELD_NUMBER: _ClassVar[int]
    corrections: _containers.RepeatedCompositeFieldContainer[Correction]
    def __init__(self, corrections: _Optional[_Iterable[_Union[Correction, _Mapping]]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_classifier_pb2.ClassifyResult]
    def __init__(self, results: _Optional[_Iterable[_Union[_classifier_pb2.ClassifyResult, _Mapping]]] = ...) -> None: ...
