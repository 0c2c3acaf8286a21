"""Every RPC and every service of proto/, checked against the live mesh.

Parametrized from the descriptors compiled from proto/ (not from the generated code), so an
RPC added to a .proto file is checked on the next run, and fails here until a server
implements it. Requests are built from the descriptors too (dynamic message classes) and
sent as raw bytes: nothing here depends on gen/.
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests.contract.conftest import CONTRACT, Served
from tests.contract.descriptors import BoundCase, FieldRule, Method

pytestmark = pytest.mark.e2e

MALFORMED_UUID = "not-a-uuid"
# An empty request is answered OK or refused with INVALID_ARGUMENT; these mean "not served".
NOT_ANSWERED = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
TIMEOUT = 20.0

UUID_FIELDS = [
    (method, rule)
    for method in CONTRACT.methods
    for rule in CONTRACT.field_rules(method.input_type)
    if rule.uuid
]

BOUND_CASES = [
    (method, case)
    for method in CONTRACT.methods
    for case in CONTRACT.bound_cases(method.input_type)
]


def call(channel: grpc.Channel, method: Method, request: bytes) -> bytes:
    """One call with a raw request; the response comes back undecoded. A server stream
    (WatchOrder) is called as one, and its first message is the answer."""
    if method.server_streaming:
        stream: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(method.path)
        responses = stream(request, timeout=TIMEOUT, wait_for_ready=True)
        try:
            return next(responses)
        finally:
            responses.cancel()
    stub: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method.path)
    response = stub(request, timeout=TIMEOUT, wait_for_ready=True)
    return response


def refusal(channel: grpc.Channel, method: Method, request: bytes, what: str = "") -> grpc.RpcError:
    try:
        call(channel, method, request)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"{method.path} accepted {what or 'the request'} {request!r}")


def violations(error: grpc.RpcError) -> dict[str, str]:
    """field -> description of the google.rpc.BadRequest attached to a refusal."""
    status = rpc_status.from_call(error)
    found: dict[str, str] = {}
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found |= {v.field: v.description for v in bad.field_violations}
    return found


def required_fields(method: Method) -> set[str]:
    rules = CONTRACT.field_rules(method.input_type)
    return {r.field for r in rules if r.required or r.one_of_required}


@pytest.mark.contract("rpc", "reflection")
@pytest.mark.parametrize("method", CONTRACT.methods, ids=lambda m: m.id)
def test_reflection_lists_the_method_and_resolves_its_types(method: Method, served: Served) -> None:
    pool = served.pool(method.service)
    listed = {m.name for m in pool.FindServiceByName(method.service).methods}
    assert method.name in listed, (
        f"{method.path} is declared in proto/ but the server's reflection does not list it "
        f"(it lists {sorted(listed)})"
    )
    served_method = pool.FindServiceByName(method.service).methods_by_name[method.name]
    assert (served_method.server_streaming, served_method.client_streaming) == (
        method.server_streaming,
        False,
    ), f"{method.path}: the server streams otherwise than proto/ declares"
    for name in CONTRACT.message_names(method.input_type) | CONTRACT.message_names(
        method.output_type
    ):
        assert pool.FindMessageTypeByName(name).full_name == name


@pytest.mark.contract("rpc", "answered")
@pytest.mark.parametrize("method", CONTRACT.methods, ids=lambda m: m.id)
def test_the_server_answers_the_method(method: Method, served: Served) -> None:
    try:
        call(served.channel(method.service), method, b"")
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
    assert code not in NOT_ANSWERED, (
        f"{method.path} is declared in proto/ but the server answers {code.name} "
        "to the empty request: not implemented"
    )


def check_empty_request(channel: grpc.Channel, method: Method) -> None:
    """The empty request is refused with a BadRequest naming exactly the required fields."""
    error = refusal(channel, method, b"")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.path, error)
    named = violations(error)
    expected = required_fields(method)
    assert expected, (
        f"{method.input_type} declares no required field: mark them with "
        "[(buf.validate.field).required = true]"
    )
    assert set(named) == expected, (
        f"{method.path}: the empty request's BadRequest names {sorted(named)}; the proto's "
        f"rules declare {sorted(expected)} as required"
    )
    assert all(named.values()), f"{method.path}: a field violation without a description"


def check_uuid_field(channel: grpc.Channel, method: Method, rule: FieldRule) -> None:
    """A malformed UUID in the field is refused with a BadRequest naming the field."""
    request = CONTRACT.message_class(method.input_type)()
    setattr(request, rule.field, MALFORMED_UUID)
    what = f"{rule.field}={MALFORMED_UUID!r}"
    error = refusal(channel, method, request.SerializeToString(), what)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.path, error)
    named = violations(error)
    assert rule.field in named, (
        f"{method.path}: {rule.field}={MALFORMED_UUID!r} is not named by the BadRequest "
        f"(it names {sorted(named)})"
    )
    assert "uuid" in named[rule.field].lower(), named[rule.field]


@pytest.mark.contract("rpc", "empty->BadRequest")
@pytest.mark.parametrize("method", CONTRACT.methods, ids=lambda m: m.id)
def test_the_empty_request_is_refused_naming_the_required_fields(
    method: Method, served: Served
) -> None:
    check_empty_request(served.channel(method.service), method)


@pytest.mark.contract("rpc", "uuid fields")
@pytest.mark.parametrize(
    ("method", "rule"), UUID_FIELDS, ids=[f"{m.id}.{r.field}" for m, r in UUID_FIELDS]
)
def test_a_uuid_field_refuses_a_malformed_value(
    method: Method, rule: FieldRule, served: Served
) -> None:
    check_uuid_field(served.channel(method.service), method, rule)


@pytest.mark.contract("rpc", "bounds")
@pytest.mark.parametrize(
    ("method", "case"), BOUND_CASES, ids=[f"{m.id}.{c.path}" for m, c in BOUND_CASES]
)
def test_a_value_past_a_declared_bound_is_refused_naming_the_field(
    method: Method, case: BoundCase, served: Served
) -> None:
    """Derived from the annotations: ranges, lengths, item counts, defined enums."""
    request = CONTRACT.message_class(method.input_type)()
    case.build(request)
    what = f"{case.path} past {case.rule}"
    error = refusal(served.channel(method.service), method, request.SerializeToString(), what)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.path, what, error)
    named = violations(error)
    assert case.path in named, f"{method.path}: {what} is not named (it names {sorted(named)})"


def test_every_kind_of_bound_is_derived() -> None:
    """Each kind of bound the contract uses today gives at least one case."""
    kinds = {case.rule.split(" ")[0] for _, case in BOUND_CASES}
    assert {"int32.gt", "int32.gte", "string.max_len", "repeated.max_items"} <= kinds, kinds
    assert "enum.defined_only" in kinds, kinds


def test_every_request_message_and_uuid_field_is_covered() -> None:
    """The parametrization above is not empty by accident, and covers the server stream."""
    assert CONTRACT.methods
    assert {m.input_type for m, _ in UUID_FIELDS}
    streams = {m.id for m in CONTRACT.methods if m.server_streaming}
    assert "OrderService/WatchOrder" in streams, streams


def test_every_id_field_of_a_request_declares_its_uuid_rule() -> None:
    """An id without `(buf.validate.field).string.uuid` would not be checked by any server
    nor by the cases above: the contract itself must declare it."""
    assert CONTRACT.id_fields_without_uuid_rule() == []


@pytest.mark.contract("service", "health SERVING")
@pytest.mark.parametrize("service", CONTRACT.services)
def test_health_reports_serving_for_the_service(service: str, served: Served) -> None:
    stub = health_pb2_grpc.HealthStub(served.channel(service))
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
    assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    overall = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    assert overall.status == health_pb2.HealthCheckResponse.SERVING, service


@pytest.mark.contract("service", "reflection")
@pytest.mark.parametrize("service", CONTRACT.services)
def test_reflection_lists_the_service(service: str, served: Served) -> None:
    assert service in served.targets, f"{service} is in proto/ but no server lists it"
    listed = {m.name for m in served.pool(service).FindServiceByName(service).methods}
    declared = {m.name for m in CONTRACT.methods if m.service == service}
    assert listed == declared, f"{service}: reflection lists {listed}, proto/ has {declared}"
