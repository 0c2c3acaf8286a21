"""AIP-155 request ids: same id + same request replays the first response; same id +
different request is refused (ALREADY_EXISTS, IDEMPOTENCY_KEY_REUSED) with no effect.

The key row is written in the same transaction as the effect. Two concurrent requests with
one id both try; PostgreSQL makes the second insert wait for the first and then fail, its
transaction (effect included) rolls back, and it replays the first response.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from services.common.errors import IdempotencyKeyReused
from services.common.uow import UnitOfWork

R = TypeVar("R", bound=Message)

_LOOKUP = text(
    "SELECT fingerprint, response FROM idempotency_keys"
    " WHERE operation = :operation AND request_id = :request_id"
)
_REMEMBER = text(
    "INSERT INTO idempotency_keys (operation, request_id, fingerprint, response)"
    " VALUES (:operation, :request_id, :fingerprint, :response)"
)


def fingerprint(request: Message) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


async def run_idempotent(
    unit_of_work: Callable[[], UnitOfWork],
    operation: str,
    request_id: str,
    request: Message,
    response_type: type[R],
    work: Callable[[UnitOfWork], Awaitable[R]],
) -> R:
    """Run `work` once per request id; replay its response for retries."""
    key = {"operation": operation, "request_id": request_id, "fingerprint": fingerprint(request)}
    for attempt in range(2):
        try:
            async with unit_of_work() as uow:
                row = (await uow.conn.execute(_LOOKUP, key)).first()
                if row is not None:
                    if bytes(row.fingerprint) != key["fingerprint"]:
                        raise IdempotencyKeyReused(request_id)
                    return response_type.FromString(bytes(row.response))
                response = await work(uow)
                await uow.conn.execute(_REMEMBER, {**key, "response": response.SerializeToString()})
                return response
        except sa_exc.IntegrityError as error:
            # Lost the race to a concurrent request with this id: replay its response.
            if attempt == 0 and "idempotency_keys_pkey" in str(error.orig):
                continue
            raise
    raise AssertionError("unreachable")
