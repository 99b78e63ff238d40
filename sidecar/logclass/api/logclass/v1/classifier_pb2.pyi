from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    EMPTY_MESSAGE: _ClassVar[ErrorCode]
    MESSAGE_TOO_LONG: _ClassVar[ErrorCode]
    INVALID_UTF8: _ClassVar[ErrorCode]
    INTERNAL: _ClassVar[ErrorCode]
    SOURCE_TOO_LONG: _ClassVar[ErrorCode]
ERROR_CODE_UNSPECIFIED: ErrorCode
EMPTY_MESSAGE: ErrorCode
MESSAGE_TOO_LONG: ErrorCode
INVALID_UTF8: ErrorCode
INTERNAL: ErrorCode
SOURCE_TOO_LONG: ErrorCode

class LogRecord(_message.Message):
    __slots__ = ("source", "message", "id", "attributes", "message_bytes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    source: str
    message: str
    id: str
    attributes: _containers.ScalarMap[str, str]
    message_bytes: bytes
    def __init__(self, source: _Optional[str] = ..., message: _Optional[str] = ..., id: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., message_bytes: _Optional[bytes] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("records", "request_id", "budget_ms", "wait_for_all")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_ALL_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[LogRecord]
    request_id: str
    budget_ms: int
    wait_for_all: bool
    def __init__(self, records: _Optional[_Iterable[_Union[LogRecord, _Mapping]]] = ..., request_id: _Optional[str] = ..., budget_ms: _Optional[int] = ..., wait_for_all: _Optional[bool] = ...) -> None: ...

class ClassifyResult(_message.Message):
    __slots__ = ("id", "label", "confidence", "tier", "template_id", "model_version", "error", "detail")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    label: str
    confidence: float
    tier: str
    template_id: str
    model_version: str
    error: ErrorCode
    detail: str
    def __init__(self, id: _Optional[str] = ..., label: _Optional[str] = ..., confidence: _Optional[float] = ..., tier: _Optional[str] = ..., template_id: _Optional[str] = ..., model_version: _Optional[str] = ..., error: _Optional[_Union[ErrorCode, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results", "request_id")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ClassifyResult]
    request_id: str
    def __init__(self, results: _Optional[_Iterable[_Union[ClassifyResult, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("labels", "tiers", "model_version", "bundle_files_sha256", "embedding_model", "embedding_device", "llm_backend", "llm_model", "fallback_label", "max_records_per_request", "max_message_bytes", "server_version", "max_source_bytes")
    class BundleFilesSha256Entry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FILES_SHA256_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DEVICE_FIELD_NUMBER: _ClassVar[int]
    LLM_BACKEND_FIELD_NUMBER: _ClassVar[int]
    LLM_MODEL_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_LABEL_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_SOURCE_BYTES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    tiers: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    bundle_files_sha256: _containers.ScalarMap[str, str]
    embedding_model: str
    embedding_device: str
    llm_backend: str
    llm_model: str
    fallback_label: str
    max_records_per_request: int
    max_message_bytes: int
    server_version: str
    max_source_bytes: int
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., tiers: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., bundle_files_sha256: _Optional[_Mapping[str, str]] = ..., embedding_model: _Optional[str] = ..., embedding_device: _Optional[str] = ..., llm_backend: _Optional[str] = ..., llm_model: _Optional[str] = ..., fallback_label: _Optional[str] = ..., max_records_per_request: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., server_version: _Optional[str] = ..., max_source_bytes: _Optional[int] = ...) -> None: ...
