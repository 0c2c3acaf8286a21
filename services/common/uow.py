"""Unit of work: one database transaction that also carries the events it emits.

Events are written to the outbox table inside the same transaction as the state change, so
both commit or neither does; the relay publishes them afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import TracebackType

from google.protobuf.message import Message
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from services.common.db import is_connection_error
from services.common.errors import Unavailable
from services.common.events import envelope
from services.common.faults import crash_point

_INSERT_OUTBOX = text(
    "INSERT INTO outbox (event_id, subject, event_type, payload, headers)"
    " VALUES (:event_id, :subject, :event_type, :payload, CAST(:headers AS jsonb))"
)


class UnitOfWork:
    def __init__(
        self, engine: AsyncEngine, source: str, on_commit: Callable[[], None] | None = None
    ) -> None:
        self._engine = engine
        self._source = source
        self._on_commit = on_commit
        self._events: list[Message] = []
        self._conn: AsyncConnection | None = None
        self._tx: AsyncTransaction | None = None

    @property
    def conn(self) -> AsyncConnection:
        assert self._conn is not None, "use the unit of work as `async with`"
        return self._conn

    def emit(self, event: Message) -> None:
        """Queue an event; it is written to the outbox when the unit of work commits."""
        self._events.append(event)

    async def __aenter__(self) -> UnitOfWork:
        try:
            self._conn = await self._engine.connect()
            self._tx = await self._conn.begin()
        except (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError) as error:
            await self._close()
            raise self._translate(error) from error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                await self._commit()
            elif self._tx is not None and self._tx.is_active:
                await self._tx.rollback()
        except (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError) as error:
            if exc is None:
                raise self._translate(error) from error
        finally:
            await self._close()
        if exc is not None and isinstance(exc, sa_exc.DBAPIError | sa_exc.TimeoutError | OSError):
            translated = self._translate(exc)
            if translated is not exc:
                raise translated from exc

    async def _commit(self) -> None:
        if self._events:
            rows = []
            for event in self._events:
                env = envelope(event, self._source)
                rows.append(
                    {
                        "event_id": env.event_id,
                        "subject": env.subject,
                        "event_type": env.event_type,
                        "payload": env.payload,
                        "headers": json.dumps(env.headers),
                    }
                )
            await self.conn.execute(_INSERT_OUTBOX, rows)
        assert self._tx is not None
        await self._tx.commit()
        if self._events:
            crash_point("outbox.committed")
        if self._events and self._on_commit is not None:
            self._on_commit()  # wake the relay now instead of at its next poll
        self._events.clear()

    async def _close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @staticmethod
    def _translate(error: BaseException) -> BaseException:
        if is_connection_error(error):
            return Unavailable("the database is unavailable, retry later", "DATABASE_UNAVAILABLE")
        return error
