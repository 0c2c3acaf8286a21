"""Transactions on the driver's connection: SQLAlchemy's pool lends the connection, asyncpg
runs the statements.

SQLAlchemy's execution layer (statement cache keys, parameter and result processing, a
greenlet switch per statement) cost about a quarter of every service's CPU; asyncpg alone
does the same work with its own per-connection cache of prepared statements
(docs/performance.md). The pool stays SQLAlchemy's: sizing, timeouts, invalidation.

Statements keep SQLAlchemy's readable `:name` parameters; each text is compiled to asyncpg's
`$1, $2, …` once per process.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from services.common.db import is_connection_error

# `:name`, but not the `::type` of a cast
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

Params = Mapping[str, Any]
Record = Any  # asyncpg.Record: row["column"], no attribute access


@functools.lru_cache(maxsize=1024)
def compile_named(sql: str) -> tuple[str, tuple[str, ...]]:
    """`… WHERE a = :a AND b = :b OR a2 = :a` → (`… $1 … $2 … $1`, ("a", "b")).

    Args:
        sql: a statement with `:name` parameters.

    Returns:
        (the statement with `$n` placeholders, the names in their order).
    """
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAM.sub(number, sql), tuple(names)


def row_lock(for_update: bool) -> str:
    """The `SELECT` suffix that row-locks what it reads until the transaction ends, or none.

    Args:
        for_update: whether the caller will change the rows it reads.

    Returns:
        `" FOR UPDATE"` or `""`, to append to the statement.
    """
    return " FOR UPDATE" if for_update else ""


class Sql:
    """The statements of one transaction, with named parameters."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver  # asyncpg.Connection

    @staticmethod
    def _bind(sql: str, params: Params | None) -> tuple[str, list[Any]]:
        query, names = compile_named(sql)
        if not names:
            return query, []
        if params is None:
            raise TypeError(f"statement needs parameters {names}")
        return query, [params[name] for name in names]

    async def fetch(self, sql: str, params: Params | None = None) -> list[Record]:
        """Every row the statement returns."""
        query, args = self._bind(sql, params)
        return list(await self.driver.fetch(query, *args))

    async def fetchrow(self, sql: str, params: Params | None = None) -> Record | None:
        """The first row the statement returns, or None."""
        query, args = self._bind(sql, params)
        return await self.driver.fetchrow(query, *args)

    async def fetchone(self, sql: str, params: Params | None = None) -> Record:
        """The row a statement must return (an INSERT or UPDATE … RETURNING of a known row)."""
        row = await self.fetchrow(sql, params)
        if row is None:
            raise LookupError(f"no row from: {sql[:80]}")
        return row

    async def row_by(
        self, table: str, columns: str, key: str, value: object, *, for_update: bool = False
    ) -> Record | None:
        """The row of `table` whose `key` column equals `value`, or None: the one shape of a
        repository's lookup by id.

        Args:
            table: the table (of the service's schema).
            columns: the columns to read, as the SELECT lists them.
            key: the column to match (a primary or unique key).
            value: the key's value.
            for_update: row-lock it until the transaction ends (the caller will change it).

        Returns:
            The row, or None when there is none.
        """
        return await self.fetchrow(
            f"SELECT {columns} FROM {table} WHERE {key} = :value{row_lock(for_update)}",
            {"value": value},
        )

    async def update_row(
        self, table: str, columns: str, key: str, value: object, changes: Params
    ) -> Record:
        """Write `changes` to the row of `table` whose `key` column equals `value`, stamp its
        `updated_at`, and read it back: the one shape of a repository's write-back.

        Args:
            table: the table (of the service's schema).
            columns: the columns to read back, as RETURNING lists them.
            key: the column to match (a primary or unique key).
            value: the key's value.
            changes: the new values by column (their names are the statement's, never a
                caller's input).

        Returns:
            The row as written.

        Raises:
            LookupError: there is no such row (a write-back follows a read of it).
        """
        assignments = ", ".join(f"{column} = :{column}" for column in changes)
        return await self.fetchone(
            f"UPDATE {table} SET {assignments}, updated_at = now()"
            f" WHERE {key} = :key_value RETURNING {columns}",
            {**changes, "key_value": value},
        )

    async def fetchval(self, sql: str, params: Params | None = None) -> Any:
        """The first column of the first row, or None."""
        query, args = self._bind(sql, params)
        return await self.driver.fetchval(query, *args)

    async def execute(self, sql: str, params: Params | None = None) -> int:
        """Run a statement; returns the rows it affected."""
        query, args = self._bind(sql, params)
        status: str = await self.driver.execute(query, *args)
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run the statement once per parameter set."""
        query, names = compile_named(sql)
        await self.driver.executemany(query, [[row[name] for name in names] for row in rows])


def leaves_connection_unusable(error: BaseException | None) -> bool:
    """After this error the connection may be dead, or still inside an operation (a call
    cancelled or timed out mid-statement, a connection caught while its server goes away):
    it must not go back to the pool.

    Args:
        error: what the operation raised, or None.

    Returns:
        True when the connection must be discarded, not pooled.
    """
    if error is None:
        return False
    return isinstance(error, asyncio.CancelledError | asyncpg.InterfaceError) or (
        is_connection_error(error)
    )


class Transaction:
    """One database transaction: `async with Transaction(engine) as sql:` commits on a
    clean exit and rolls back on an exception. Errors are the driver's (asyncpg's).

    With `autocommit`, there is no BEGIN and no COMMIT: each statement is its own
    transaction. For a single read or a single write, that is the same guarantee with two
    round trips fewer. `before_commit` runs inside the transaction, last (the outbox rows)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        autocommit: bool = False,
        before_commit: Callable[[Sql], Awaitable[None]] | None = None,
    ) -> None:
        self._engine = engine
        self.autocommit = autocommit
        self._before_commit = before_commit
        self._lent: PoolProxiedConnection | None = None  # the pool's, checked out
        self._sql: Sql | None = None
        self._tx: Any = None  # asyncpg's Transaction
        self._open = False

    async def begin(self) -> Sql:
        """Borrow a live connection and BEGIN on it. A pooled connection its server closed
        (a PostgreSQL restart) is discarded for the next one: asyncpg already knows it is
        closed, or its BEGIN fails at once. So a restart costs no failed call."""
        try:
            for _ in range(self._engine.pool.size() + 2):  # type: ignore[attr-defined]
                # The pooled connection itself, not an engine Connection around it: that
                # wrapper cost a third of each checkout and return (docs/performance.md).
                self._lent = await self._engine.raw_connection()
                driver: Any = self._lent.driver_connection
                self._sql = Sql(driver)
                if driver.is_closed():
                    await self.close(ConnectionError("closed by the server"))
                    continue
                if self.autocommit:
                    return self._sql
                self._tx = driver.transaction()
                try:
                    await self._tx.start()
                except Exception as error:
                    if isinstance(error, TimeoutError) or not leaves_connection_unusable(error):
                        raise
                    await self.close(error)
                    continue
                self._open = True
                return self._sql
        except BaseException as error:
            await self.close(error)
            raise
        raise ConnectionError("no live database connection in the pool")

    async def commit(self) -> None:
        """Commit (the outbox rows are written just before), unless in autocommit."""
        if self.autocommit:
            return
        assert self._open, "begin first"
        assert self._sql is not None
        if self._before_commit is not None:
            await self._before_commit(self._sql)
        self._open = False
        await self._tx.commit()

    async def end(self, error: BaseException | None) -> None:
        """Commit when `error` is None (a failing commit raises), else roll back; the
        connection goes back to the pool either way, unless it is no longer usable."""
        try:
            if error is None:
                await self.commit()
        except BaseException as commit_error:
            error = commit_error
            raise
        finally:
            await self.close(error)

    async def close(self, error: BaseException | None = None) -> None:
        """Roll back what is still open and give the connection back; `error` is what ended
        the transaction. A connection it leaves unusable, or one that is dead or still
        inside a transaction, is discarded instead; the server rolls back what it held."""
        lent, self._lent = self._lent, None
        if lent is None or self._sql is None:
            return
        driver = self._sql.driver
        reusable = not leaves_connection_unusable(error) and not driver.is_closed()
        try:
            if reusable and self._open:
                self._open = False
                try:
                    await self._tx.rollback()
                except Exception:  # the caller's own error is the one to see
                    reusable = False
                except BaseException:
                    reusable = False
                    raise
        finally:
            self._open = False
            # Either returns the connection to the pool (invalidated: to be replaced) and
            # may await the driver (its close, the pool's reset), hence the greenlet.
            if not reusable or driver.is_closed() or driver.is_in_transaction():
                await greenlet_spawn(lent.invalidate)
            else:
                await greenlet_spawn(lent.close)

    async def __aenter__(self) -> Sql:
        return await self.begin()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.end(exc)
