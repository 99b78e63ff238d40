"""The one table between the engine's record errors (``Decision.error``) and the contract's
``ErrorCode``: the gRPC service and HTTP answer with it, the client reads it back."""

from __future__ import annotations

from collections.abc import Mapping

from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.core.decision import ERROR_EMPTY, ERROR_INTERNAL, ERROR_SOURCE_TOO_LONG, ERROR_TOO_LONG, ERROR_UTF8

TO_PROTO: Mapping[str, int] = {
    "": pb.ERROR_CODE_UNSPECIFIED,
    ERROR_EMPTY: pb.EMPTY_MESSAGE,
    ERROR_TOO_LONG: pb.MESSAGE_TOO_LONG,
    ERROR_UTF8: pb.INVALID_UTF8,
    ERROR_INTERNAL: pb.INTERNAL,
    ERROR_SOURCE_TOO_LONG: pb.SOURCE_TOO_LONG,
}
FROM_PROTO: Mapping[int, str] = {code: error for error, code in TO_PROTO.items()}
# The enum's value names, as proto3 JSON writes an enum field.
NAMES: Mapping[int, str] = {v.number: v.name for v in pb.ErrorCode.DESCRIPTOR.values}


def to_proto(error: str) -> int:
    """``Decision.error`` as an ErrorCode; an error the contract has no code for is INTERNAL."""
    return TO_PROTO.get(error, pb.INTERNAL)


def from_proto(code: int) -> str:
    """An ErrorCode as ``Decision.error``; a code newer than this client reads as internal."""
    return FROM_PROTO.get(code, ERROR_INTERNAL)
