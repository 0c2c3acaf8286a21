"""Domain errors: what went wrong, in the caller's terms; plain exceptions, no transport.

Each kind (NotFound, FailedPrecondition, ...) says what sort of failure it is; which status a
transport answers with is decided at the transport boundary, in one table
(`services/common/grpc_server.py` `GRPC_CODES`), as httpx maps foreign errors in its
transport: the gRPC server turns them into a `google.rpc.Status` carrying `ErrorInfo`
(always) and `BadRequest` (for field problems). Anything else becomes INTERNAL with no
internals leaked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

ERROR_DOMAIN = "shop.example.com"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: which field, and what is wrong with it."""

    field: str
    description: str


@dataclass
class DomainError(Exception):
    """Base class. `reason` is an UPPER_SNAKE constant clients can switch on."""

    message: str
    reason: str = "ERROR"
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class InvalidArgument(DomainError):
    """The request itself is wrong; `violations` name each bad field."""

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
    """The addressed thing does not exist."""


class AlreadyExists(DomainError):
    """What the caller asked to create exists already (or its key was used otherwise)."""


class PermissionDenied(DomainError):
    """The caller may not do this (to this thing)."""


class FailedPrecondition(DomainError):
    """The request is well-formed but the state of things refuses it."""


class ResourceExhausted(DomainError):
    """A bounded resource (e.g. open streams of one process) is used up: retry later."""


class Unavailable(DomainError):
    """A dependency (database, another service) is down: the caller may retry."""


class DeadlineExceeded(DomainError):
    """The call's time ran out before the work could be done (or known to be done)."""


class IdempotencyKeyReused(AlreadyExists):
    """A request id sent again with a different request (ALREADY_EXISTS)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"request_id {request_id} was already used with a different request",
            "IDEMPOTENCY_KEY_REUSED",
            {"request_id": request_id},
        )


class OrderNotFound(NotFound):
    """The contract's ORDER_NOT_FOUND: Order's answer for an unknown order, and Payment's when
    Order says the order it is asked to charge does not exist (one error, one wording)."""

    def __init__(self, order_id: str) -> None:
        super().__init__(
            f"order {order_id} does not exist", "ORDER_NOT_FOUND", {"order_id": order_id}
        )


T = TypeVar("T")


def found(value: T | None, missing: NotFound) -> T:
    """What a lookup found, or the caller's NOT_FOUND when it found nothing.

    Args:
        value: The lookup's result (None: nothing there).
        missing: The error that names what is missing.

    Returns:
        `value`, when there is one.

    Raises:
        NotFound: `missing`, when `value` is None.
    """
    if value is None:
        raise missing
    return value
