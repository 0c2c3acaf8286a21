"""AIP-155 request ids for use cases that span several transactions (ProcessPayment waits on
the gateway between two). Same semantics as services.common.idempotency: same id + same
request → the first response; same id + different request → IDEMPOTENCY_KEY_REUSED, no effect.

The id is *claimed* up front (a row with an empty response, committed at once), so a
different request reusing it is refused before it can have any effect, even while the first
is still running. A retry of the same request finds the claim and simply runs again: the use
case itself is idempotent (one payment per order), so it reaches the same payment. The
response is stored when the call succeeds; a call that fails drops its claim, so a retry
re-evaluates instead of replaying an error that may since have gone away.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import text

from services.common.errors import IdempotencyKeyReused
from services.common.idempotency import fingerprint
from services.common.uow import UnitOfWork

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)

IN_PROGRESS = b""  # responses here are never empty messages: they always carry a payment

_CLAIM = text(
    "INSERT INTO idempotency_keys (operation, request_id, fingerprint, response)"
    " VALUES (:operation, :request_id, :fingerprint, :in_progress)"
    " ON CONFLICT (operation, request_id) DO NOTHING RETURNING 1"
)
_LOOKUP = text(
    "SELECT fingerprint, response FROM idempotency_keys"
    " WHERE operation = :operation AND request_id = :request_id"
)
_REMEMBER = text(
    "INSERT INTO idempotency_keys (operation, request_id, fingerprint, response)"
    " VALUES (:operation, :request_id, :fingerprint, :response)"
    " ON CONFLICT (operation, request_id) DO UPDATE SET response = excluded.response"
    " WHERE idempotency_keys.response = :in_progress"
    " AND idempotency_keys.fingerprint = excluded.fingerprint"
)
_RELEASE = text(
    "DELETE FROM idempotency_keys WHERE operation = :operation AND request_id = :request_id"
    " AND fingerprint = :fingerprint AND response = :in_progress"
)


class RequestLedger:
    def __init__(self, unit_of_work: Callable[[], UnitOfWork]) -> None:
        self.unit_of_work = unit_of_work

    async def _lookup(self, key: dict[str, object]) -> bytes | None:
        """The stored response (IN_PROGRESS while running), None if the id is unknown."""
        async with self.unit_of_work() as uow:
            row = (await uow.conn.execute(_LOOKUP, key)).first()
        if row is None:
            return None
        if bytes(row.fingerprint) != key["fingerprint"]:
            raise IdempotencyKeyReused(str(key["request_id"]))
        return bytes(row.response)

    async def replay(self, operation: str, request_id: str, request: Message) -> bytes | None:
        """The first response for this id if there is one; raises if the id was reused."""
        stored = await self._lookup(_key(operation, request_id, request))
        return stored or None

    async def claim(self, operation: str, request_id: str, request: Message) -> bytes | None:
        """Claim the id for this request; returns the stored response of a finished call."""
        key = _key(operation, request_id, request)
        async with self.unit_of_work() as uow:
            # One transaction: a fresh claim needs no lookup (it is ours, in progress).
            if (await uow.conn.execute(_CLAIM, key)).first() is not None:
                return None
            row = (await uow.conn.execute(_LOOKUP, key)).first()
        if row is None:  # claimed and released meanwhile by a failed call: run again
            return None
        if bytes(row.fingerprint) != key["fingerprint"]:
            raise IdempotencyKeyReused(str(key["request_id"]))
        return bytes(row.response) or None

    async def remember(
        self, operation: str, request_id: str, request: Message, response: Message
    ) -> None:
        key = _key(operation, request_id, request)
        async with self.unit_of_work() as uow:
            await uow.conn.execute(_REMEMBER, {**key, "response": response.SerializeToString()})

    async def release(self, operation: str, request_id: str, request: Message) -> None:
        # Best effort: a claim left behind only means a retry runs the (idempotent) call again.
        with contextlib.suppress(Exception):
            async with self.unit_of_work() as uow:
                await uow.conn.execute(_RELEASE, _key(operation, request_id, request))

    async def run(
        self,
        operation: str,
        request_id: str,
        request: Message,
        response_type: type[R],
        work: Callable[[], Awaitable[R]],
    ) -> R:
        stored = await self.claim(operation, request_id, request)
        if stored is not None:
            return response_type.FromString(stored)
        try:
            response = await work()
        except BaseException:
            await self.release(operation, request_id, request)
            raise
        await self.remember(operation, request_id, request, response)
        return response


def _key(operation: str, request_id: str, request: Message) -> dict[str, object]:
    return {
        "operation": operation,
        "request_id": request_id,
        "fingerprint": fingerprint(request),
        "in_progress": IN_PROGRESS,
    }
