"""Unit of work: one database transaction that also carries the events it emits.

Events are written to the outbox table inside the same transaction as the state change, so
both commit or neither does; the relay publishes them afterwards. A use case whose change is
one statement can do without the transaction: `with_events` folds the outbox rows into that
statement, which PostgreSQL runs atomically on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, NoReturn, Self

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import metrics, tracing
from services.common.db import is_connection_error
from services.common.errors import DomainError, Unavailable
from services.common.events import envelope
from services.common.faults import crash_point
from services.common.outbox import OutboxRow
from services.common.sql import Params, Record, Sql, Transaction

OnCommit = Callable[[Sequence[OutboxRow]], None]  # the relay's `committed`

_INSERT_OUTBOX = (
    "INSERT INTO outbox (event_id, subject, event_type, payload, headers)"
    " VALUES (:event_id, :subject, :event_type, :payload, CAST(:headers AS jsonb))"
)


class UnitOfWork:
    """One transaction and the events it emits. Each service subclasses it to hand its use
    cases their repositories (`uow.accounts`, `uow.orders`, ...), so no use case builds one
    from the connection itself, and tests can give them a fake unit of work instead."""

    def __init__(self, engine: AsyncEngine, source: str, on_commit: OnCommit | None = None) -> None:
        self._source = source
        self._on_commit = on_commit
        # each event with the traceparent of the span active when it was emitted (None: off)
        self._events: list[tuple[Message, str | None]] = []
        self._counts = metrics.CommitCounts()
        self._tx = Transaction(engine, before_commit=self._write_outbox)
        self._sql: Sql | None = None
        self._written: list[OutboxRow] = []  # outbox rows written, handed over on commit

    @property
    def conn(self) -> Sql:
        """The unit of work's connection (inside `async with`)."""
        assert self._sql is not None, "use the unit of work as `async with`"
        return self._sql

    def autocommit(self) -> Self:
        """No BEGIN, no COMMIT: each statement commits on its own. For a use case that is a
        single read (GetOrder) or a single write: two round trips fewer. Emits no events."""
        self._tx.autocommit = True
        return self

    def emit(self, event: Message) -> None:
        """Queue an event; it is written to the outbox when the unit of work commits."""
        if self._tx.autocommit:
            raise RuntimeError("an autocommit unit of work cannot emit events")
        self._events.append((event, tracing.current_traceparent()))

    def with_events(self, *events: Message) -> Sql:
        """For an autocommit unit of work whose change is one `INSERT`/`UPDATE … RETURNING`:
        the statement run through the returned `Sql` also writes `events` to the outbox, in
        the same statement and only if it returned a row (a conflict or a lost race writes
        none). No BEGIN, no COMMIT: three round trips fewer than a transaction. The events
        are built before the statement runs, so they cannot quote what it computes."""
        if not self._tx.autocommit:
            raise RuntimeError("in a transaction, emit() the events instead")
        traceparent = tracing.current_traceparent()
        rows = [_outbox_row(event, self._source, traceparent) for event in events]
        return _StatementWithEvents(self.conn.driver, rows, self._outbox_written)

    def _outbox_written(self, rows: list[OutboxRow]) -> None:
        self._written.extend(rows)

    async def __aenter__(self) -> Self:
        try:
            self._sql = await self._tx.begin()
        except Exception as error:
            _raise_unavailable_if_database_lost(error)
            raise
        self._counts.enter()
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
            self._counts.exit(committed=False)
            self._written = []
            _raise_unavailable_if_database_lost(commit_error)
            raise
        self._counts.exit(committed=exc is None)
        # Committed rows: the transaction's, or in autocommit a with_events statement's (it
        # committed on its own, whatever came after it).
        written, self._written = self._written, []
        self._events.clear()
        if written and (exc is None or self._tx.autocommit):
            crash_point("outbox.committed")
            if self._on_commit is not None:
                # the relay publishes them now instead of finding them at its next sweep
                self._on_commit(written)
        if exc is not None and not isinstance(exc, DomainError):
            _raise_unavailable_if_database_lost(exc)

    async def _write_outbox(self, sql: Sql) -> None:
        rows = [_outbox_row(event, self._source, parent) for event, parent in self._events]
        for row in rows:
            metrics.count_event(row.event_type)  # counted when the transaction commits
        if len(rows) == 1:  # the usual case; asyncpg's executemany costs more for one row
            await sql.execute(_INSERT_OUTBOX, rows[0].params())
        elif rows:
            await sql.executemany(_INSERT_OUTBOX, [row.params() for row in rows])
        self._outbox_written(rows)


def _outbox_row(event: Message, source: str, traceparent: str | None) -> OutboxRow:
    """The row; its headers carry the `traceparent` of the state change's span, if any, which
    the relay publishes with the event (DESIGN: one saga is one trace)."""
    env = envelope(event, source)
    if traceparent:
        env.headers["traceparent"] = traceparent
    return OutboxRow(env.event_id, env.subject, env.event_type, env.payload, env.headers)


class _StatementWithEvents(Sql):
    """Runs one statement, and in it the outbox rows, written only if it returned a row:

        WITH effect AS (<statement>), outboxed AS (INSERT INTO outbox …
            SELECT … WHERE EXISTS (SELECT 1 FROM effect)) SELECT * FROM effect

    PostgreSQL runs every data-modifying part of a WITH to completion, in one snapshot, as
    one statement: both parts commit or neither does."""

    def __init__(
        self, driver: Any, rows: list[OutboxRow], written: Callable[[list[OutboxRow]], None]
    ):
        super().__init__(driver)
        self._rows = rows
        self._written = written
        self._used = False

    async def fetchrow(self, sql: str, params: Params | None = None) -> Record | None:
        if self._used:
            raise RuntimeError("with_events carries its events into one statement only")
        self._used = True
        if not self._rows:
            return await super().fetchrow(sql, params)
        selects, outbox_params = [], {}
        for i, row in enumerate(self._rows):
            selects.append(
                f"SELECT CAST(:outbox_event_id_{i} AS uuid), CAST(:outbox_subject_{i} AS text),"
                f" CAST(:outbox_event_type_{i} AS text), CAST(:outbox_payload_{i} AS bytea),"
                f" CAST(:outbox_headers_{i} AS jsonb) WHERE EXISTS (SELECT 1 FROM effect)"
            )
            outbox_params.update(
                {f"outbox_{name}_{i}": value for name, value in row.params().items()}
            )
        statement = (
            f"WITH effect AS ({sql}), outboxed AS ("
            "INSERT INTO outbox (event_id, subject, event_type, payload, headers) "
            + " UNION ALL ".join(selects)
            + ") SELECT * FROM effect"
        )
        found = await super().fetchrow(statement, {**(params or {}), **outbox_params})
        if found is not None:
            self._written(self._rows)
            for row in self._rows:
                metrics.count_event(row.event_type)
        return found

    async def fetch(self, sql: str, params: Params | None = None) -> NoReturn:
        raise TypeError("with_events: one row-returning statement, through fetchrow/fetchone")

    fetchval = execute = fetch

    async def executemany(self, sql: str, rows: Any) -> NoReturn:
        raise TypeError("with_events: one row-returning statement, through fetchrow/fetchone")


def _raise_unavailable_if_database_lost(error: BaseException) -> None:
    """A database that went away (down, restarting, pool exhausted) is UNAVAILABLE to the
    caller, who may retry; any other error stays what it is."""
    if is_connection_error(error):
        raise Unavailable(
            "the database is unavailable, retry later", "DATABASE_UNAVAILABLE"
        ) from error
