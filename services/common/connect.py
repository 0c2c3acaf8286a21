"""The HTTP/JSON door (DESIGN §9): every RPC of a service over the Connect protocol, on the
service's HTTP port, calling the very servicer the gRPC server calls.

The protocol (routes, JSON and binary codecs, Connect streams, timeouts, compression, the
error body) is the `connectrpc` runtime's, driven by the ASGI apps generated into gen/
(`*_connect.py`). What the gRPC door does around a call is done here in the same shared
pieces, so the two doors cannot drift apart:

- request id (`x-request-id` in, echoed out), one access-log line, the
  `grpc_server_*{protocol="connect"}` metrics, a SERVER span when tracing is on;
- authorization by the caller's verified TLS identity (`security.refusal`), before the body
  is read;
- the request's `buf.validate` rules (`request_rules.check`);
- domain errors through `to_rpc_status`, so the Connect error carries the same code,
  message, `ErrorInfo` and `BadRequest` (each with its JSON under `debug`).

In front of the generated apps: bodies above `GRPC_MAX_MESSAGE_BYTES` are refused while they
are read (`resource_exhausted`, 429), JSON with unknown fields is refused (a typo must not
pass silently as a default value), GET is refused (no method of the contract is marked free
of side effects), the gRPC protocol is refused (use the gRPC port), and CORS answers only the
origins `HTTP_CORS_ORIGINS` lists.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from connectrpc.code import Code
from connectrpc.compat._codec import ProtoBinaryCodec, ProtoJSONCodec
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.request import RequestContext
from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, json_format
from google.protobuf.descriptor import ServiceDescriptor
from google.rpc import error_details_pb2, status_pb2
from protobuf import Registry
from protobuf.wkt import Any as PyAny
from protobuf.wkt import FileDescriptorSet

from services.common import metrics, tracing
from services.common.errors import DomainError
from services.common.grpc_server import REQUEST_ID_HEADER, internal_status, to_rpc_status
from services.common.http import PEER_IDENTITIES, Receive, Scope, Send, respond
from services.common.logs import request_id_var
from services.common.request_rules import check
from services.common.security import refusal
from services.common.security_settings import AuthzPolicy

log = logging.getLogger(__name__)

# Connect's codes are gRPC's, spelled in lower case (and CANCELED with one L).
CONNECT_CODES: dict[grpc.StatusCode, Code] = {
    status: Code.CANCELED if status is grpc.StatusCode.CANCELLED else Code(status.name.lower())
    for status in grpc.StatusCode
    if status is not grpc.StatusCode.OK
}
_GRPC_CODES = {code: status for status, code in CONNECT_CODES.items()}
_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}

# What a browser may send and read across origins (the Connect protocol's own headers).
CORS_ALLOW_HEADERS = "content-type, connect-protocol-version, connect-timeout-ms, x-request-id"
CORS_EXPOSE_HEADERS = "x-request-id"

_peer = contextvars.ContextVar[frozenset[str]]("connect_peer", default=frozenset())


def _details_registry() -> Registry:
    """The error-detail messages as the Connect runtime's protobuf can read them, so each
    detail of an error body also carries its JSON (`debug`) for people reading curl output."""
    files = descriptor_pb2.FileDescriptorSet()
    for module in (duration_pb2, error_details_pb2):
        file = files.file.add()
        module.DESCRIPTOR.CopyToProto(file)
        _name_json_fields(file.message_type, module.DESCRIPTOR.message_types_by_name.values())
    return FileDescriptorSet.from_binary(files.SerializeToString()).to_registry()


def _name_json_fields(protos: Iterable[Any], descriptors: Iterable[Any]) -> None:
    """CopyToProto leaves json_name out, and the JSON would print empty field names."""
    for proto, descriptor in zip(protos, descriptors, strict=True):
        for field_proto, field in zip(proto.field, descriptor.fields, strict=True):
            field_proto.json_name = field.json_name
        _name_json_fields(proto.nested_type, descriptor.nested_types)


_DETAILS = _details_registry()


class ProtoNamesJSONCodec(ProtoJSONCodec):  # type: ignore[type-arg]
    """Proto3 JSON with the field names of the .proto files (`order_id`), as grpcurl prints
    them (DESIGN §9); either spelling is read, unknown fields are refused."""

    def __init__(self) -> None:
        super().__init__(ignore_unknown_fields=False)

    def encode(self, message: Any) -> bytes:
        """The message as JSON with its proto field names."""
        return json_format.MessageToJson(
            message, preserving_proto_field_name=True, indent=None
        ).encode()


class _Detail(ErrorDetail):
    """A `google.rpc` detail that the error body can also print as JSON."""

    def value(self, desc_or_registry: Any = None) -> Any:
        return super().value(desc_or_registry or _DETAILS)


def connect_error(status: status_pb2.Status) -> ConnectError:
    """The Connect error of a `google.rpc.Status`: same code, message and details.

    Args:
        status: the status the gRPC door would answer with.

    Returns:
        The error the Connect door answers with.
    """
    code = CONNECT_CODES.get(_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN), Code.UNKNOWN)
    details = [_Detail(PyAny(type_url=d.type_url, value=d.value)) for d in status.details]
    return ConnectError(code, status.message, details)


def grpc_code_of(error: Exception | None) -> grpc.StatusCode:
    """The gRPC code a call ended with, for the metrics and logs both doors share.

    Args:
        error: what the call raised (None for success).

    Returns:
        OK, the code of a ConnectError, or UNKNOWN.
    """
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, ConnectError):
        return _GRPC_CODES.get(error.code, grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.UNKNOWN


def _translate(error: Exception, method: str) -> ConnectError:
    if isinstance(error, ConnectError):
        return error
    if isinstance(error, DomainError):
        return connect_error(to_rpc_status(error))
    if isinstance(error, NotImplementedError):
        return ConnectError(Code.UNIMPLEMENTED, f"{method} is not implemented")
    log.error("unhandled error in %s", method, exc_info=error)
    return connect_error(internal_status())


class _CallContext:
    """What a gRPC servicer reads from its context, answered from the Connect request: the
    time left before the caller's deadline (`Connect-Timeout-Ms`). A generated base method
    (declared, not implemented) sets a code before raising NotImplementedError, which
    becomes `unimplemented`; the code it sets is not needed."""

    def __init__(self, ctx: RequestContext[Any, Any]) -> None:
        self._ctx = ctx

    def time_remaining(self) -> float | None:
        remaining = self._ctx.timeout_ms
        return None if remaining is None else max(remaining / 1000.0, 0.0)

    def set_code(self, code: object) -> None:
        pass

    def set_details(self, details: str) -> None:
        pass


def _snake(name: str) -> str:
    """`ProcessPayment` → `process_payment`, as protoc-gen-connectrpc names the methods."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _Bridge:
    """The generated Connect service Protocol, answered by the gRPC servicer's methods."""

    def __init__(self, servicer: object, service: ServiceDescriptor) -> None:
        for method in service.methods:
            handler = getattr(servicer, method.name)
            setattr(self, _snake(method.name), self._adapt(handler, method.server_streaming))

    @staticmethod
    def _adapt(handler: Any, streaming: bool) -> Callable[..., Any]:
        if streaming:

            def stream(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
                return handler(request, _CallContext(ctx))  # type: ignore[no-any-return]

            return stream

        async def unary(request: Any, ctx: RequestContext[Any, Any]) -> Any:
            return await handler(request, _CallContext(ctx))

        return unary


@dataclass
class _Call:
    method: str
    started: float
    token: contextvars.Token[str]
    span: contextlib.ExitStack


class _Access:
    """First in the chain, before the body is read: request id, access log, metrics and the
    trace span of every call, whatever it ends with (a refusal by `_Authorization` too)."""

    async def on_start(self, ctx: RequestContext[Any, Any]) -> _Call:
        info = ctx.method
        method = f"/{info.service_name}/{info.name}"
        request_id = ctx.request_headers.get(REQUEST_ID_HEADER) or str(uuid.uuid4())
        ctx.response_headers[REQUEST_ID_HEADER] = request_id
        span = contextlib.ExitStack()
        span.enter_context(tracing.server_span(method, ctx.request_headers))
        return _Call(method, time.perf_counter(), request_id_var.set(request_id), span)

    async def on_end(
        self, call: _Call, ctx: RequestContext[Any, Any], error: Exception | None
    ) -> None:
        code = grpc_code_of(error)
        elapsed = time.perf_counter() - call.started
        grpc_service, grpc_method = metrics.split_method(call.method)
        metrics.GRPC_SERVER_SECONDS.labels(grpc_service, grpc_method, "connect").observe(elapsed)
        metrics.GRPC_SERVER_HANDLED.labels(grpc_service, grpc_method, code.name, "connect").inc()
        log.info(
            "rpc %s %s",
            call.method,
            code.name,
            extra={
                "rpc": call.method,
                "code": code.name,
                "ms": round(elapsed * 1000, 2),
                "protocol": "connect",
            },
        )
        call.span.close()
        with contextlib.suppress(ValueError):  # ended from another context
            request_id_var.reset(call.token)


class _Authorization:
    """Second, still before the body is read: the caller's verified identity against the
    authorization rules, as on the gRPC port."""

    def __init__(self, policy: AuthzPolicy) -> None:
        self._policy = policy

    async def on_start(self, ctx: RequestContext[Any, Any]) -> None:
        method = f"/{ctx.method.service_name}/{ctx.method.name}"
        refused = refusal(self._policy, method, _peer.get())
        if refused is not None:
            raise connect_error(to_rpc_status(refused))

    async def on_end(
        self, token: None, ctx: RequestContext[Any, Any], error: Exception | None
    ) -> None:
        pass


class _Handling:
    """Around the servicer: the request's rules first, then domain errors as Connect errors
    with the gRPC door's details."""

    async def intercept_unary(
        self,
        call_next: Callable[[Any, RequestContext[Any, Any]], Awaitable[Any]],
        request: Any,
        ctx: RequestContext[Any, Any],
        /,
    ) -> Any:
        try:
            check(request)
            return await call_next(request, ctx)
        except Exception as error:
            raise _translate(error, ctx.method.name) from error

    async def intercept_server_stream(
        self,
        call_next: Callable[[Any, RequestContext[Any, Any]], AsyncIterator[Any]],
        request: Any,
        ctx: RequestContext[Any, Any],
        /,
    ) -> AsyncIterator[Any]:
        try:
            check(request)
            responses = call_next(request, ctx)
            try:
                async for response in responses:
                    yield response
            finally:
                aclose = getattr(responses, "aclose", None)
                if aclose is not None:
                    await aclose()
        except Exception as error:
            raise _translate(error, ctx.method.name) from error


def _application_class(service: ServiceDescriptor) -> Any:
    """The generated ASGI app of a service: `<file>_connect.<Service>ASGIApplication`."""
    module = importlib.import_module(
        service.file.name.removesuffix(".proto").replace("/", ".") + "_connect"
    )
    return getattr(module, f"{service.name}ASGIApplication")


@dataclass(frozen=True)
class ConnectOptions:
    """How the door answers: size limit, authorization and CORS."""

    max_message_bytes: int = 4 * 1024 * 1024
    # None: callers are not authenticated (no mutual TLS), as on the gRPC port.
    authz: AuthzPolicy | None = None
    cors_origins: frozenset[str] = frozenset()


class ConnectDoor:
    """The Connect routes of a process's services, as one ASGI app."""

    def __init__(self, servicers: Mapping[str, object], options: ConnectOptions) -> None:
        """Serve each servicer (by its service's full name) over Connect.

        Args:
            servicers: full service name → the servicer the gRPC server calls.
            options: size limit, authorization and CORS.
        """
        codecs: list[Any] = [ProtoBinaryCodec(), ProtoNamesJSONCodec()]
        interceptors: list[Any] = [_Access()]
        if options.authz is not None:
            interceptors.append(_Authorization(options.authz))
        interceptors.append(_Handling())
        self._options = options
        self._apps: dict[str, Any] = {}
        self._methods: set[str] = set()
        for name, servicer in servicers.items():
            service = descriptor_pool.Default().FindServiceByName(name)
            self._methods |= {f"/{name}/{method.name}" for method in service.methods}
            application = _application_class(service)
            self._apps[f"/{service.full_name}/"] = application(
                _Bridge(servicer, service),
                interceptors=interceptors,
                read_max_bytes=options.max_message_bytes,
                codecs=codecs,
            )

    @property
    def routes(self) -> list[str]:
        """The path prefix of each service it serves (`/shop.order.v1.OrderService/`)."""
        return sorted(self._apps)

    def app_for(self, path: str) -> Any | None:
        """The app that serves `path`, if it is one of ours.

        Args:
            path: the request's path.

        Returns:
            The generated ASGI app of the path's service, or None.
        """
        prefix = path[: path.rfind("/") + 1]
        return self._apps.get(prefix)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one Connect request (ASGI); 404 for a path of no service of ours."""
        app = self.app_for(scope["path"])
        headers = dict(scope.get("headers") or ())
        send = self._with_cors(headers.get(b"origin", b"").decode(), send)
        if app is None or scope["path"] not in self._methods:
            await _refuse(send, 404, Code.UNIMPLEMENTED, f"no such method: {scope['path']}")
            return
        method = scope["method"]
        if method == "OPTIONS":
            await respond(send, 204, b"")
            return
        if method != "POST":
            await _refuse(
                send, 405, Code.UNIMPLEMENTED, f"{method} is not supported; use POST", allow=True
            )
            return
        if headers.get(b"content-type", b"").startswith(b"application/grpc"):
            await _refuse(
                send, 415, Code.UNIMPLEMENTED, "gRPC is served on the gRPC port, not here"
            )
            return
        token = _peer.set(scope.get(PEER_IDENTITIES, frozenset()))
        try:
            await app(scope, receive, send)
        finally:
            _peer.reset(token)

    def _with_cors(self, origin: str, send: Send) -> Send:
        """`send` that adds the CORS headers when the request's origin is allowed."""
        allowed = self._options.cors_origins
        if not origin or (origin not in allowed and "*" not in allowed):
            return send
        extra = [
            (b"access-control-allow-origin", origin.encode()),
            (b"access-control-allow-methods", b"POST, OPTIONS"),
            (b"access-control-allow-headers", CORS_ALLOW_HEADERS.encode()),
            (b"access-control-expose-headers", CORS_EXPOSE_HEADERS.encode()),
            (b"access-control-max-age", b"7200"),
            (b"vary", b"Origin"),
        ]

        async def send_with_cors(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return send_with_cors


async def _refuse(send: Send, status: int, code: Code, message: str, allow: bool = False) -> None:
    body = json.dumps({"code": code.value, "message": message}, ensure_ascii=False).encode()
    await respond(
        send,
        status,
        body,
        "application/json",
        extra_headers=[(b"allow", b"POST")] if allow else (),
    )
