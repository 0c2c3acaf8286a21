"""The pool does not ping before each transaction (a round trip saved per transaction, see
docs/performance.md). This checks what that relies on: after a PostgreSQL restart no unit of
work fails (the dead connections are known closed and replaced before they are lent), and a
connection that dies in the middle of a transaction, or is left busy by a cancelled call,
fails that one call and is never lent again."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.exc import SAWarning
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import create_engine
from services.common.errors import Unavailable
from services.common.uow import UnitOfWork
from services.localmesh.embedded import EmbeddedPostgres

pytestmark = pytest.mark.integration


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A server of our own: restarting or killing the session's would disturb every other
    test."""
    server = EmbeddedPostgres(tmp_path / "postgres", preferred_port=0)
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


@contextlib.asynccontextmanager
async def engine_on(postgres: EmbeddedPostgres, pool_size: int = 10) -> AsyncIterator[AsyncEngine]:
    url = postgres.url.replace("postgresql://", "postgresql+asyncpg://")
    engine = create_engine(url, "public", pool_size=pool_size)
    try:
        yield engine
    finally:
        await engine.dispose()


async def backend_pid(engine: AsyncEngine) -> int:
    async with UnitOfWork(engine, "/test") as uow:
        return int(await uow.conn.fetchval("SELECT pg_backend_pid()"))


async def test_units_of_work_heal_after_a_postgres_restart(postgres: EmbeddedPostgres) -> None:
    async with engine_on(postgres) as engine:

        async def one() -> int:
            async with UnitOfWork(engine, "/test") as uow:
                return int(await uow.conn.fetchval("SELECT 1"))

        # Fill the pool with several connections, all of which the restart kills.
        assert await asyncio.gather(*(one() for _ in range(4))) == [1, 1, 1, 1]
        await asyncio.to_thread(postgres.stop)
        await asyncio.to_thread(postgres.start)

        failures = 0
        for _ in range(6):
            try:
                assert await one() == 1
            except Unavailable:
                failures += 1
        # Each dead connection is known closed before it is lent (asyncpg saw the server
        # close it), so the unit of work takes a fresh one: no call fails.
        assert failures == 0, f"{failures} units of work failed after the restart"
        assert await one() == 1


async def test_a_connection_killed_mid_transaction_fails_one_call_and_is_discarded(
    postgres: EmbeddedPostgres,
) -> None:
    async with engine_on(postgres, pool_size=1) as engine:
        victim = await backend_pid(engine)
        with pytest.raises(Unavailable):
            async with UnitOfWork(engine, "/test") as uow:
                assert await uow.conn.fetchval("SELECT pg_backend_pid()") == victim
                await uow.conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        for _ in range(3):
            assert await backend_pid(engine) != victim


async def test_a_unit_of_work_cancelled_mid_statement_leaves_no_busy_connection_behind(
    postgres: EmbeddedPostgres,
) -> None:
    # The caller's deadline cancels a call while its statement runs: that connection may
    # still be busy, so it is discarded and the next unit of work gets another one.
    async with engine_on(postgres, pool_size=1) as engine:
        cancelled: list[int] = []

        async def slow_statement() -> None:
            async with UnitOfWork(engine, "/test") as uow:
                cancelled.append(int(await uow.conn.fetchval("SELECT pg_backend_pid()")))
                await uow.conn.execute("SELECT pg_sleep(5)")

        for _ in range(3):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(slow_statement(), 0.2)
            assert await backend_pid(engine) != cancelled[-1]


async def test_discarded_connections_leave_the_pools_books_straight(
    postgres: EmbeddedPostgres,
) -> None:
    # A discarded connection is given back to the pool explicitly, as a slot to refill
    # (not left to the garbage collector, which SQLAlchemy warns about), and once: were
    # it returned twice, two units of work at once would share one connection.
    async with engine_on(postgres, pool_size=2) as engine:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                with pytest.raises(Unavailable):
                    async with UnitOfWork(engine, "/test") as uow:
                        await uow.conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            gc.collect()
        assert [w for w in caught if issubclass(w.category, SAWarning)] == []

        async def held_pid() -> int:
            async with UnitOfWork(engine, "/test") as uow:
                pid = int(await uow.conn.fetchval("SELECT pg_backend_pid()"))
                await asyncio.sleep(0.1)  # still holding it while the others check out
                return pid

        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        pids = await asyncio.gather(*(held_pid() for _ in range(4)))
        assert len(set(pids)) == 4, f"connections shared between units of work: {pids}"
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
