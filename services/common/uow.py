"""Unit of work: one database transaction that also carries the events it emits.

Events are written to the outbox table inside the same transaction as the state change, so
both commit or neither does; the relay publishes them afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import TracebackType

import asyncpg
from google.protobuf.message import Message
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import is_connection_error
from services.common.errors import DomainError, Unavailable
from services.common.events import envelope
from services.common.faults import crash_point
from services.common.sql import Sql, Transaction

_INSERT_OUTBOX = (
    "INSERT INTO outbox (event_id, subject, event_type, payload, headers)"
    " VALUES (:event_id, :subject, :event_type, :payload, CAST(:headers AS jsonb))"
)

# What a database that went away raises, and what it means to the caller: retry later.
_DATABASE_ERRORS = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a connection caught mid-operation
    ConnectionError,
    OSError,
)


class UnitOfWork:
    def __init__(
        self, engine: AsyncEngine, source: str, on_commit: Callable[[], None] | None = None
    ) -> None:
        self._source = source
        self._on_commit = on_commit
        self._events: list[Message] = []
        self._tx = Transaction(engine)
        self._sql: Sql | None = None

    @property
    def conn(self) -> Sql:
        assert self._sql is not None, "use the unit of work as `async with`"
        return self._sql

    def autocommit(self) -> UnitOfWork:
        """No BEGIN, no COMMIT: each statement commits on its own. For a use case that is a
        single read (GetOrder) or a single write: two round trips fewer. Emits no events."""
        self._tx.autocommit = True
        return self

    def emit(self, event: Message) -> None:
        """Queue an event; it is written to the outbox when the unit of work commits."""
        if self._tx.autocommit:
            raise RuntimeError("an autocommit unit of work cannot emit events")
        self._events.append(event)

    async def __aenter__(self) -> UnitOfWork:
        try:
            self._sql = await self._tx.begin()
        except _DATABASE_ERRORS as error:
            raise self._translate(error) from error
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        error = exc
        try:
            if exc is None:
                await self._commit()
        except (*_DATABASE_ERRORS, asyncpg.PostgresError) as commit_error:
            error = commit_error
            raise self._translate(commit_error) from commit_error
        except BaseException as interrupted:
            error = interrupted
            raise
        finally:
            await self._tx.close(error)  # rolls back what is still open
        if exc is not None and not isinstance(exc, DomainError):
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
            if len(rows) == 1:  # the usual case; asyncpg's executemany costs more for one row
                await self.conn.execute(_INSERT_OUTBOX, rows[0])
            else:
                await self.conn.executemany(_INSERT_OUTBOX, rows)
        await self._tx.commit()
        if self._events:
            crash_point("outbox.committed")
        if self._events and self._on_commit is not None:
            self._on_commit()  # wake the relay now instead of at its next poll
        self._events.clear()

    @staticmethod
    def _translate(error: BaseException) -> BaseException:
        if is_connection_error(error):
            return Unavailable("the database is unavailable, retry later", "DATABASE_UNAVAILABLE")
        return error
