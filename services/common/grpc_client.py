"""Outgoing gRPC calls between services: one channel per dependency, created once and
reused; UNAVAILABLE retried by the channel's service config; every call carries a deadline
derived from the incoming one; a dependency's failure becomes a clear status for our caller.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import grpc
from grpc_status import rpc_status

from services.common.errors import DeadlineExceeded, DomainError, Unavailable

DEFAULT_CALL_TIMEOUT = 5.0
# Leave this much of the caller's budget for our own work after the call returns.
DEADLINE_MARGIN = 0.05


def service_config(service_name: str) -> str:
    """Retry UNAVAILABLE (the server is down, restarting or overloaded) with backoff; spread
    calls over every address the target resolves to (a headless Service: one per pod)."""
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
    """Plaintext, or TLS with `credentials` (security.channel_credentials: mutual TLS)."""
    options = [
        ("grpc.service_config", service_config(service_name)),
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


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
    """The ErrorInfo reason a dependency attached to its error ("" if none)."""
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def dependency_failure(error: grpc.aio.AioRpcError, dependency: str) -> DomainError:
    """A dependency that is down, slow or broken: UNAVAILABLE for our caller (retryable)."""
    return Unavailable(
        f"{dependency} is unavailable ({error.code().name}); retry later",
        f"{dependency.upper()}_UNAVAILABLE",
        {"dependency": dependency, "dependency_code": error.code().name},
    )
