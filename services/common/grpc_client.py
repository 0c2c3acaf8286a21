"""Outgoing gRPC calls between services: one channel per dependency, created once and
reused; UNAVAILABLE retried by the channel's service config; every call carries a deadline
derived from the incoming one; a dependency's failure becomes a clear status for our caller.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_status import rpc_status

from services.common import metrics, tracing
from services.common.errors import DeadlineExceeded, DomainError, Unavailable
from services.common.logs import request_id_var

DEFAULT_CALL_TIMEOUT = 5.0
# Leave this much of the caller's budget for our own work after the call returns.
DEADLINE_MARGIN = 0.05


def service_config(service_name: str) -> str:
    """Retry UNAVAILABLE (the server is down, restarting or overloaded) with backoff; spread
    calls over every address the target resolves to (a headless Service: one per pod).

    Args:
        service_name: the full name of the called gRPC service.

    Returns:
        The channel's service config, as JSON.
    """
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [
                {
                    "name": [{"service": service_name}],
                    "retryPolicy": {
                        "maxAttempts": 4,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


def create_channel(
    target: str,
    service_name: str,
    max_message_bytes: int = 4 * 1024 * 1024,
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """Plaintext, or TLS with `credentials` (security.channel_credentials: mutual TLS).

    Args:
        target: `host:port` or a DNS name of several addresses.
        service_name: the called service, for the retry policy.
        max_message_bytes: the largest message either way.
        credentials: TLS credentials, or None for plaintext.

    Returns:
        The channel, with the client interceptors (metrics, request id, traces).
    """
    options = [
        ("grpc.service_config", service_config(service_name)),
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    # Ours first: it forwards the request id and measures the call; the tracing interceptor
    # (when traces are on) then sends `traceparent`.
    interceptors = [ClientInterceptor(), *tracing.client_interceptors()]
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


class ClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Every outgoing unary call: the caller's request id forwarded as `x-request-id` (one
    id in every service's log lines for one client call), and grpc_client_handled_total /
    grpc_client_handling_seconds."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Time, count and forward the request id of one outgoing call."""
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        grpc_service, grpc_method = metrics.split_method(name)
        request_id = request_id_var.get()
        if request_id:
            metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
            if not any(key == "x-request-id" for key, _ in metadata):
                metadata.add("x-request-id", request_id)
            client_call_details = grpc.aio.ClientCallDetails(
                client_call_details.method,
                client_call_details.timeout,
                metadata,
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
        started = time.perf_counter()
        call = await continuation(client_call_details, request)
        try:
            code = await call.code()
        finally:
            metrics.GRPC_CLIENT_SECONDS.labels(grpc_service, grpc_method).observe(
                time.perf_counter() - started
            )
        metrics.GRPC_CLIENT_HANDLED.labels(grpc_service, grpc_method, code.name).inc()
        return call


@dataclass(frozen=True, slots=True)
class Deadline:
    """The incoming call's deadline as event-loop time (None: the caller set none), from
    which every outgoing call's timeout is derived."""

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """From `context.time_remaining()` of the incoming call."""
        if seconds is None:
            return cls(None)
        return cls(asyncio.get_running_loop().time() + seconds)

    def remaining(self) -> float | None:
        """Seconds left, or None when the caller set no deadline."""
        if self.at is None:
            return None
        return self.at - asyncio.get_running_loop().time()

    def call_timeout(self, default: float = DEFAULT_CALL_TIMEOUT) -> float:
        """The timeout of an outgoing call: ours, capped by what is left of the caller's."""
        remaining = self.remaining()
        if remaining is None:
            return default
        budget = remaining - DEADLINE_MARGIN
        if budget <= 0:
            raise DeadlineExceeded("the caller's deadline has passed", "DEADLINE_EXCEEDED")
        return min(default, budget)


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason a dependency attached to its error ("" if none).

    Args:
        error: the failed call.

    Returns:
        Its ErrorInfo reason, or "".
    """
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def dependency_failure(error: grpc.aio.AioRpcError, dependency: str) -> DomainError:
    """A dependency that is down, slow or broken: UNAVAILABLE for our caller (retryable).

    Args:
        error: the failed call.
        dependency: the called service's short name, e.g. `order`.

    Returns:
        An Unavailable error naming the dependency (`ORDER_UNAVAILABLE`, ...).
    """
    return Unavailable(
        f"{dependency} is unavailable ({error.code().name}); retry later",
        f"{dependency.upper()}_UNAVAILABLE",
        {"dependency": dependency, "dependency_code": error.code().name},
    )
