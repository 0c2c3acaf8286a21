"""Unit of work: one database transaction that also carries the events it emits.

Events are written to the outbox table inside the same transaction as the state change, so
both commit or neither does; the relay publishes them afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import TracebackType

from google.protobuf.message import Message
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


class UnitOfWork:
    def __init__(
        self, engine: AsyncEngine, source: str, on_commit: Callable[[], None] | None = None
    ) -> None:
        self._source = source
        self._on_commit = on_commit
        self._events: list[Message] = []
        self._tx = Transaction(engine, before_commit=self._write_outbox)
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
        except Exception as error:
            _raise_unavailable_if_database_lost(error)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._tx.end(exc)  # commit (the outbox rows last) or roll back
        except Exception as commit_error:
            _raise_unavailable_if_database_lost(commit_error)
            raise
        if exc is None:
            if self._events:
                crash_point("outbox.committed")
                if self._on_commit is not None:
                    self._on_commit()  # wake the relay now instead of at its next poll
            self._events.clear()
        elif not isinstance(exc, DomainError):
            _raise_unavailable_if_database_lost(exc)

    async def _write_outbox(self, sql: Sql) -> None:
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
            await sql.execute(_INSERT_OUTBOX, rows[0])
        elif rows:
            await sql.executemany(_INSERT_OUTBOX, rows)


def _raise_unavailable_if_database_lost(error: BaseException) -> None:
    """A database that went away (down, restarting, pool exhausted) is UNAVAILABLE to the
    caller, who may retry; any other error stays what it is."""
    if is_connection_error(error):
        raise Unavailable(
            "the database is unavailable, retry later", "DATABASE_UNAVAILABLE"
        ) from error
