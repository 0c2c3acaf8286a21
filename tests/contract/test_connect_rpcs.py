"""Every RPC of proto/ over the Connect protocol too (DESIGN §9), checked against the live mesh.

The routes are derived from the descriptors compiled from proto/, like the gRPC cases of
test_rpcs.py: each method must answer at `POST /<service>/<method>` on the HTTP port of the
process that serves it over gRPC, in JSON and in binary protobuf, with the same validation
(the empty request refused naming exactly the required fields; a malformed UUID named). A
method added to proto/ without a Connect route fails `test_every_method_has_a_connect_route`
naming it; `test_a_method_without_a_route_is_named` shows that check catching one.
"""

from __future__ import annotations

import json
import struct

import pytest

from tests.contract.conftest import CONTRACT, Served
from tests.contract.descriptors import FieldRule, Method
from tests.contract.test_rpcs import MALFORMED_UUID, UUID_FIELDS, required_fields
from tests.e2e.connect_http import Answer, ConnectHttp

pytestmark = pytest.mark.e2e

CODECS = ("json", "proto")


def call(served: Served, method: Method, body: bytes, codec: str) -> Answer:
    """One Connect call of `method` with a raw body; a server stream is sent as one."""
    door = ConnectHttp(served.http_address(method.service))
    if method.server_streaming:
        return door.request(
            method.path,
            struct.pack(">BI", 0, len(body)) + body,
            headers={"Content-Type": f"application/connect+{codec}", "Connect-Timeout-Ms": "2000"},
        )
    return door.request(method.path, body, headers={"Content-Type": f"application/{codec}"})


def stream_error(answer: Answer) -> dict[str, object]:
    """The `error` of a Connect stream's end message (a stream answers 200 with its status in
    the last envelope)."""
    body = answer.body
    while body:
        flags, length = struct.unpack(">BI", body[:5])
        data, body = body[5 : 5 + length], body[5 + length :]
        if flags & 0x02:
            return json.loads(data).get("error", {})  # type: ignore[no-any-return]
    return {}


def refusal_of(answer: Answer, method: Method) -> tuple[str, dict[str, str]]:
    """(Connect code, BadRequest field → description) of a refused call, stream or not."""
    if method.server_streaming:
        error = stream_error(answer)
        wrapped = Answer(400, {}, json.dumps(error).encode())
        return str(error.get("code", "")), wrapped.violations()
    return answer.code, answer.violations()


def empty(codec: str) -> bytes:
    return b"{}" if codec == "json" else b""


def unanswered(served: Served, methods: list[Method]) -> list[str]:
    """The methods the Connect door has no route for: answered 404, or `unimplemented`."""
    missing = []
    for method in methods:
        answer = call(served, method, b"{}", "json")
        code = stream_error(answer).get("code") if method.server_streaming else answer.code
        if (answer.status == 404 and not method.server_streaming) or code == "unimplemented":
            missing.append(method.path)
    return missing


@pytest.mark.contract("connect", "routes")
def test_every_method_has_a_connect_route(served: Served) -> None:
    assert unanswered(served, CONTRACT.methods) == []


def test_a_method_without_a_route_is_named(served: Served) -> None:
    """The check above fails naming an RPC that proto/ would declare with no route."""
    declared = Method(
        "shop.payment.v1.PaymentService",
        "Frobnicate",
        "shop.payment.v1.GetPaymentRequest",
        "shop.payment.v1.GetPaymentResponse",
        "",
    )
    assert unanswered(served, [*CONTRACT.methods, declared]) == [declared.path]


@pytest.mark.contract("connect", "empty->BadRequest")
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("method", CONTRACT.methods, ids=lambda m: m.id)
def test_the_empty_request_is_refused_naming_the_required_fields(
    method: Method, codec: str, served: Served
) -> None:
    answer = call(served, method, empty(codec), codec)
    code, named = refusal_of(answer, method)
    assert code == "invalid_argument", (method.path, answer.status, answer.body)
    if not method.server_streaming:
        assert answer.status == 400, (method.path, answer.status)
    assert set(named) == required_fields(method), (method.path, named)
    assert all(named.values()), f"{method.path}: a field violation without a description"


@pytest.mark.contract("connect", "uuid fields")
@pytest.mark.parametrize(
    ("method", "rule"), UUID_FIELDS, ids=[f"{m.id}.{r.field}" for m, r in UUID_FIELDS]
)
def test_a_uuid_field_refuses_a_malformed_value(
    method: Method, rule: FieldRule, served: Served
) -> None:
    request = CONTRACT.message_class(method.input_type)()
    setattr(request, rule.field, MALFORMED_UUID)
    answer = call(served, method, request.SerializeToString(), "proto")
    code, named = refusal_of(answer, method)
    assert code == "invalid_argument", (method.path, answer.status, answer.body)
    assert rule.field in named, f"{method.path}: {rule.field} not named (it names {named})"
    assert "uuid" in named[rule.field].lower(), named[rule.field]
