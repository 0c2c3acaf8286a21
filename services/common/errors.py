"""Domain errors: what went wrong, in the caller's terms, mapped once to gRPC statuses.

Handlers raise these; the server interceptor turns them into a `google.rpc.Status` carrying
`ErrorInfo` (always) and `BadRequest` (for field problems). Anything else becomes INTERNAL
with no internals leaked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc

ERROR_DOMAIN = "shop.example.com"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


@dataclass
class DomainError(Exception):
    """Base class. `reason` is an UPPER_SNAKE constant clients can switch on."""

    message: str
    reason: str = "ERROR"
    metadata: Mapping[str, str] = field(default_factory=dict)

    code = grpc.StatusCode.UNKNOWN

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        message: str,
        violations: Iterable[FieldViolation] = (),
        reason: str = "INVALID_ARGUMENT",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason, dict(metadata or {}))
        self.violations = tuple(violations)


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(DomainError):
    """A bounded resource (e.g. open streams of one process) is used up: retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(DomainError):
    """A dependency (database, another service) is down: the caller may retry."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class IdempotencyKeyReused(AlreadyExists):
    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"request_id {request_id} was already used with a different request",
            "IDEMPOTENCY_KEY_REUSED",
            {"request_id": request_id},
        )
