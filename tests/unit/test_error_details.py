"""An error with hundreds of bad fields still reaches the client with its details: the
BadRequest is capped (the details travel in one trailer, which gRPC clients refuse above
16 KiB), ErrorInfo counts what was left out, the message names the first fields only."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2

from services.common.errors import FieldViolation, InvalidArgument
from services.common.grpc_server import MAX_FIELD_VIOLATIONS, to_rpc_status
from services.common.validation import MESSAGE_FIELDS, refuse


def details(
    error: InvalidArgument,
) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.BadRequest]:
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    packed = to_rpc_status(error).details
    assert packed[0].Unpack(info)
    assert packed[1].Unpack(bad)
    return info, bad


def many(n: int) -> list[FieldViolation]:
    return [FieldViolation(f"items[{i}].sku", "value is required") for i in range(n)]


def test_hundreds_of_violations_fit_in_one_trailer() -> None:
    with pytest.raises(InvalidArgument) as refused:
        refuse(many(1500))
    info, bad = details(refused.value)
    assert len(bad.field_violations) == MAX_FIELD_VIOLATIONS
    assert bad.field_violations[0].field == "items[0].sku"  # the first ones, in order
    assert info.metadata["omitted_field_violations"] == str(1500 - MAX_FIELD_VIOLATIONS)
    assert len(to_rpc_status(refused.value).SerializeToString()) < 16 * 1024
    assert refused.value.message.endswith(f"and {1500 - MESSAGE_FIELDS} more")
    assert len(refused.value.message) < 1024


def test_a_few_violations_are_all_there_and_nothing_is_counted_as_omitted() -> None:
    with pytest.raises(InvalidArgument) as refused:
        refuse(many(3))
    info, bad = details(refused.value)
    assert [v.field for v in bad.field_violations] == [f"items[{i}].sku" for i in range(3)]
    assert "omitted_field_violations" not in info.metadata
    assert refused.value.message == (
        "the request has invalid fields: items[0].sku, items[1].sku, items[2].sku"
    )
