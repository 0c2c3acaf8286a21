"""The one gRPC server factory every service uses.

Health (`grpc.health.v1`, per full service name and for ""), reflection, bounded message
sizes, one interceptor that gives every call a request id, a log line, its metrics
(grpc_server_handled_total, grpc_server_handling_seconds), and turns domain errors into
`google.rpc.Status` with `ErrorInfo` / `BadRequest` details, and one that checks every
request against its `buf.validate` rules (services/common/request_rules.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from services.common import metrics, tracing
from services.common.errors import (
    ERROR_DOMAIN,
    AlreadyExists,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from services.common.logs import request_id_var
from services.common.request_rules import RequestRulesInterceptor

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


# The one table from domain errors to gRPC status codes (the domain knows no transport). A
# subclass takes its nearest listed ancestor's code; an unlisted kind is UNKNOWN.
GRPC_CODES: dict[type[DomainError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_code(error: DomainError) -> grpc.StatusCode:
    """The gRPC status code a domain error is answered with.

    Args:
        error: a domain error.

    Returns:
        The code of its nearest kind in GRPC_CODES (UNKNOWN if none).
    """
    for kind in type(error).__mro__:
        if kind in GRPC_CODES:
            return GRPC_CODES[kind]
    return grpc.StatusCode.UNKNOWN


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


# The status details travel in one trailer, which gRPC clients refuse above 16 KiB by default
# (the call then ends RESOURCE_EXHAUSTED with no details at all): a request with hundreds of
# bad fields gets the first ones, and ErrorInfo's `omitted_field_violations` counts the rest.
MAX_FIELD_VIOLATIONS = 100


def to_rpc_status(error: DomainError) -> status_pb2.Status:
    """The `google.rpc.Status` a domain error is answered with.

    Args:
        error: the domain error a handler raised.

    Returns:
        Its code (from GRPC_CODES), message, `ErrorInfo` and, for field problems, `BadRequest`.
    """
    metadata = dict(error.metadata)
    shown = error.violations[:MAX_FIELD_VIOLATIONS] if isinstance(error, InvalidArgument) else ()
    if isinstance(error, InvalidArgument) and len(error.violations) > len(shown):
        metadata["omitted_field_violations"] = str(len(error.violations) - len(shown))
    details = [
        _pack(
            error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
        )
    ]
    if shown:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in shown
                    ]
                )
            )
        )
    return status_pb2.Status(code=grpc_code(error).value[0], message=error.message, details=details)


def request_id_metadata() -> tuple[tuple[str, str], ...]:
    """The call's request id as response metadata (none outside a call).

    Returns:
        `(("x-request-id", id),)` inside a call, `()` outside.
    """
    request_id = request_id_var.get()
    return ((REQUEST_ID_HEADER, request_id),) if request_id else ()


async def abort_with_status(
    context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status
) -> NoReturn:
    """End the call with a `google.rpc.Status` (its details in `grpc-status-details-bin`) and
    the request id: an abort's trailing metadata replaces what the call had set.

    Args:
        context: the call's context.
        status: the status to end it with.
    """
    error = rpc_status.to_status(status)
    await context.abort(
        error.code, error.details, (*error.trailing_metadata, *request_id_metadata())
    )
    raise AssertionError("abort returned")  # it raises; this tells the type checker


def internal_status() -> status_pb2.Status:
    """The status of an unexpected failure: INTERNAL, no internals (they go to the log).

    Returns:
        INTERNAL with reason INTERNAL and no details of the failure.
    """
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message="internal error; see the server log for this request id",
        details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))],
    )


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Request id, access log and error mapping for every unary-unary call and server
    stream."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap our unary and server-streaming handlers; leave the others alone."""
        handler = await continuation(handler_call_details)
        if handler is not None and handler.unary_stream is not None:
            return _wrap_unary_stream(handler, handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # health Watch, reflection streams: nothing of ours to wrap
        method: str = handler_call_details.method
        grpc_service, grpc_method = metrics.split_method(method)
        seconds = metrics.GRPC_SERVER_SECONDS.labels(grpc_service, grpc_method, "grpc")
        metadata = dict(handler_call_details.invocation_metadata or ())
        inner: Handler = handler.unary_unary  # type: ignore[assignment]

        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            request_id = str(metadata.get(REQUEST_ID_HEADER) or uuid.uuid4())
            token = request_id_var.set(request_id)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                # Echoed in the trailers, which go out with the status: sending it as
                # initial metadata would cost a write of its own (a fifth of a call's CPU).
                context.set_trailing_metadata(request_id_metadata())
                return await inner(request, context)
            except DomainError as error:
                code = grpc_code(error)
                await abort_with_status(context, to_rpc_status(error))
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except NotImplementedError:  # a generated base method: declared, not implemented
                code = grpc.StatusCode.UNIMPLEMENTED
                await context.abort(code, f"{method} is not implemented", request_id_metadata())
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error in %s", method)
                await abort_with_status(context, internal_status())
            finally:
                elapsed = time.perf_counter() - started
                seconds.observe(elapsed)
                metrics.GRPC_SERVER_HANDLED.labels(
                    grpc_service, grpc_method, code.name, "grpc"
                ).inc()
                log.log(
                    # probes call health every few seconds; keep them out of the INFO log
                    logging.DEBUG if method.startswith("/grpc.health.") else logging.INFO,
                    "rpc %s %s",
                    method,
                    code.name,
                    extra={
                        "rpc": method,
                        "code": code.name,
                        "ms": round(elapsed * 1000, 2),
                    },
                )
                request_id_var.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            wrapper,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


StreamHandler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def _wrap_unary_stream(
    handler: grpc.RpcMethodHandler[Any, Any], details: grpc.HandlerCallDetails
) -> grpc.RpcMethodHandler[Any, Any]:
    """A server stream (WatchOrder) gets what a unary call gets: the request id (in the
    trailers), one log line when it ends, and domain errors as `google.rpc.Status`. The
    health service's Watch stays as it is."""
    method: str = details.method
    if method.startswith("/grpc."):
        return handler
    metadata = dict(details.invocation_metadata or ())
    inner: StreamHandler = handler.unary_stream  # type: ignore[assignment]

    async def wrapper(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        request_id = str(metadata.get(REQUEST_ID_HEADER) or uuid.uuid4())
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            context.set_trailing_metadata(request_id_metadata())
            async for response in inner(request, context):
                yield response
        except DomainError as error:
            code = grpc_code(error)
            await abort_with_status(context, to_rpc_status(error))
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:  # the client cancelled, or its deadline passed
            remaining = context.time_remaining()  # a hair above 0 when the deadline cut it
            expired = remaining is not None and remaining < 0.1
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except NotImplementedError:
            code = grpc.StatusCode.UNIMPLEMENTED
            await context.abort(code, f"{method} is not implemented", request_id_metadata())
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error in %s", method)
            await abort_with_status(context, internal_status())
        finally:
            log.info(
                "rpc %s %s",
                method,
                code.name,
                extra={
                    "rpc": method,
                    "code": code.name,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            with contextlib.suppress(ValueError):  # closed from another context
                request_id_var.reset(token)

    return grpc.unary_stream_rpc_method_handler(
        wrapper,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


@dataclass
class GrpcServer:
    """The running server with its health servicer and the names it reports."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]

    async def set_serving(self, serving: bool) -> None:
        """Report every service name SERVING (True) or NOT_SERVING (False)."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first (load balancers drain), then finish in-flight calls."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def create_server(
    address: str,
    register: Sequence[Callable[[grpc.aio.Server], None]],
    service_names: Sequence[str],
    *,
    max_message_bytes: int = 4 * 1024 * 1024,
    credentials: grpc.ServerCredentials | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> GrpcServer:
    """Build and start a server on `address` ("host:0" picks a free port); TLS when given
    `credentials`; `interceptors` (e.g. authorization) run inside our own, the tracing
    interceptor (when traces are on) outside it, and every request is checked against its
    `buf.validate` rules last, just before its handler.

    Args:
        address: `host:port` to listen on.
        register: functions that add the servicers to the server.
        service_names: the full names health reports.
        max_message_bytes: the largest message either way.
        credentials: TLS credentials, or None for plaintext.
        interceptors: more interceptors, run inside ours.

    Returns:
        The started server, NOT_SERVING until the caller sets it SERVING.
    """
    server = grpc.aio.server(
        interceptors=[
            *tracing.server_interceptors(),
            ServerInterceptor(),
            *interceptors,
            RequestRulesInterceptor(),
        ],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    for add in register:
        add(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    grpc_server = GrpcServer(server, port, health_servicer, tuple(service_names))
    await grpc_server.set_serving(False)  # SERVING only once the service says it is ready
    return grpc_server
