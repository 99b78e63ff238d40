"""One table between the engine's record errors and the contract's ErrorCode, both ways."""

from __future__ import annotations

from logclass.api import error_codes
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.core import decision


def test_every_engine_error_has_a_code_and_reads_back() -> None:
    errors = {v for k, v in vars(decision).items() if k.startswith("ERROR_")}
    assert errors <= set(error_codes.TO_PROTO)
    for error in errors | {""}:
        assert error_codes.from_proto(error_codes.to_proto(error)) == error


def test_every_code_of_the_contract_has_an_error_and_a_name() -> None:
    codes = {v.number for v in pb.ErrorCode.DESCRIPTOR.values}
    assert codes == set(error_codes.FROM_PROTO) == set(error_codes.NAMES)
    assert error_codes.to_proto("a future error") == pb.INTERNAL
    assert error_codes.from_proto(99) == decision.ERROR_INTERNAL
