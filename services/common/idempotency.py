"""AIP-155 request ids: same id + same request replays the first response; same id +
different request is refused (ALREADY_EXISTS, IDEMPOTENCY_KEY_REUSED) with no effect.

Two ways to keep the promise, over one `idempotency_keys` table:

- `run_idempotent`, for a use case that is one transaction: the key row is written in the
  same transaction as the effect. Two concurrent requests with one id both try; PostgreSQL
  makes the second insert wait for the first and then fail, its transaction (effect
  included) rolls back, and it replays the first response.
- `RequestLedger`, for a use case that spans several transactions (ProcessPayment waits on
  the gateway between two). The id is *claimed* up front (a row with an empty response,
  committed at once), so a different request reusing it is refused before it can have any
  effect, even while the first is still running. (The use case's reads, which have none,
  run beside the claim: the claim costs no latency.) A retry of the same request finds the
  claim and simply runs again: such a use case must be idempotent by itself (one payment per
  order), so it reaches the same result. The response is stored when the call succeeds; a
  call that fails drops its claim, so a retry re-evaluates instead of replaying an error
  that may since have gone away.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from google.protobuf.message import Message

from services.common.errors import IdempotencyKeyReused
from services.common.sql import Sql
from services.common.uow import UnitOfWork

R = TypeVar("R", bound=Message)
P = TypeVar("P")
U = TypeVar("U", bound=UnitOfWork)

IN_PROGRESS = b""  # a claim's response; stored responses are never empty messages

_LOOKUP = (
    "SELECT fingerprint, response FROM idempotency_keys"
    " WHERE operation = :operation AND request_id = :request_id"
)
_REMEMBER = (
    "INSERT INTO idempotency_keys (operation, request_id, fingerprint, response)"
    " VALUES (:operation, :request_id, :fingerprint, :response)"
)
_CLAIM = (
    "INSERT INTO idempotency_keys (operation, request_id, fingerprint, response)"
    " VALUES (:operation, :request_id, :fingerprint, :in_progress)"
    " ON CONFLICT (operation, request_id) DO NOTHING RETURNING 1"
)
_COMPLETE_CLAIM = (
    "INSERT INTO idempotency_keys (operation, request_id, fingerprint, response)"
    " VALUES (:operation, :request_id, :fingerprint, :response)"
    " ON CONFLICT (operation, request_id) DO UPDATE SET response = excluded.response"
    " WHERE idempotency_keys.response = :in_progress"
    " AND idempotency_keys.fingerprint = excluded.fingerprint"
)
_RELEASE = (
    "DELETE FROM idempotency_keys WHERE operation = :operation AND request_id = :request_id"
    " AND fingerprint = :fingerprint AND response = :in_progress"
)


def fingerprint(request: Message) -> bytes:
    """The request's identity for its request id: a hash of its deterministic serialization.

    Args:
        request: the request message.

    Returns:
        32 bytes; the same request gives the same bytes, another request other bytes.
    """
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


def _key(operation: str, request_id: str, request: Message) -> dict[str, Any]:
    return {
        "operation": operation,
        "request_id": request_id,
        "fingerprint": fingerprint(request),
        "in_progress": IN_PROGRESS,
    }


async def _stored(conn: Sql, key: dict[str, Any]) -> bytes | None:
    """The response stored for this id (IN_PROGRESS for a claim), None if the id is unknown;
    raises if the id was used for a different request."""
    row = await conn.fetchrow(_LOOKUP, key)
    if row is None:
        return None
    if bytes(row["fingerprint"]) != key["fingerprint"]:
        raise IdempotencyKeyReused(key["request_id"])
    return bytes(row["response"])


async def run_idempotent(
    unit_of_work: Callable[[], U],
    operation: str,
    request_id: str,
    request: Message,
    response_type: type[R],
    work: Callable[[U], Awaitable[R]],
) -> R:
    """Run `work` once per request id, in the transaction that records it; replay its
    response for retries.

    Args:
        unit_of_work: a factory of the service's units of work.
        operation: the RPC's name.
        request_id: the caller's idempotency key.
        request: the request (a key reused with another request is refused).
        response_type: the response message class, to replay a stored one.
        work: the use case, run at most once per key.

    Returns:
        The response, fresh or replayed.
    """
    key = _key(operation, request_id, request)
    for attempt in range(2):
        try:
            async with unit_of_work() as uow:
                stored = await _stored(uow.conn, key)
                if stored is not None:
                    return response_type.FromString(stored)
                response = await work(uow)
                await uow.conn.execute(_REMEMBER, {**key, "response": response.SerializeToString()})
                return response
        except asyncpg.UniqueViolationError as error:
            # Lost the race to a concurrent request with this id: replay its response.
            if attempt == 0 and error.constraint_name == "idempotency_keys_pkey":
                continue
            raise
    raise AssertionError("unreachable")


class RequestLedger:
    """Request ids for use cases that span several transactions (see the module's doc)."""

    def __init__(self, unit_of_work: Callable[[], UnitOfWork]) -> None:
        self.unit_of_work = unit_of_work

    async def replay(self, operation: str, request_id: str, request: Message) -> bytes | None:
        """The first response for this id if there is one; raises if the id was reused."""
        async with self.unit_of_work().autocommit() as uow:
            return await _stored(uow.conn, _key(operation, request_id, request)) or None

    async def claim(self, operation: str, request_id: str, request: Message) -> bytes | None:
        """Claim the id for this request; returns the stored response of a finished call."""
        key = _key(operation, request_id, request)
        async with self.unit_of_work().autocommit() as uow:
            # A fresh claim needs no lookup (it is ours, in progress).
            if await uow.conn.fetchrow(_CLAIM, key) is not None:
                return None
            # Unknown (claimed and released meanwhile by a failed call) or in progress: run.
            return await _stored(uow.conn, key) or None

    async def remember(
        self, operation: str, request_id: str, request: Message, response: Message
    ) -> None:
        """Keep the response of a request id's work, to replay it for retries."""
        key = _key(operation, request_id, request)
        async with self.unit_of_work().autocommit() as uow:
            await uow.conn.execute(
                _COMPLETE_CLAIM, {**key, "response": response.SerializeToString()}
            )

    async def release(self, operation: str, request_id: str, request: Message) -> None:
        """Give up a claim whose work failed, so that a retry may run it again."""
        # Best effort: a claim left behind only means a retry runs the (idempotent) call again.
        with contextlib.suppress(Exception):
            async with self.unit_of_work().autocommit() as uow:
                await uow.conn.execute(_RELEASE, _key(operation, request_id, request))

    async def run(
        self,
        operation: str,
        request_id: str,
        request: Message,
        response_type: type[R],
        reads: Callable[[], Awaitable[P]],
        work: Callable[[P], Awaitable[R]],
    ) -> R:
        """Run `work` once per request id; a retry gets the first response.

        The use case's `reads` run beside the claim, so a call waits for the longer of the
        two, not their sum: they must have no effect, since the claim may yet refuse the id
        or replay an earlier response (then their answers are dropped). `work` runs with
        them only once the id is ours.

        Args:
            operation: the RPC's name (a request id is unique per operation).
            request_id: the caller's idempotency key.
            request: the request (a reused key with another request is refused).
            response_type: the response message class, to replay a stored one.
            reads: what the use case reads before it writes, without effects.
            work: the use case, given what `reads` returned; run at most once per key.

        Returns:
            The response, fresh or replayed.
        """
        reading = asyncio.ensure_future(reads())
        try:
            stored = await self.claim(operation, request_id, request)
        except BaseException:
            await _abandon(reading)
            raise
        if stored is not None:
            await _abandon(reading)
            return response_type.FromString(stored)
        try:
            response = await work(await reading)
        except BaseException:
            await _abandon(reading)  # already done, unless we were cancelled waiting for it
            await self.release(operation, request_id, request)
            raise
        await self.remember(operation, request_id, request, response)
        return response


async def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a task whose result is no longer wanted, and let it finish (no orphans)."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
