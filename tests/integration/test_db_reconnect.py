"""The pool does not ping before each transaction (a round trip saved per transaction, see
docs/performance.md). This checks what that relies on: after a PostgreSQL restart, at most
one unit of work per dead pool fails, as UNAVAILABLE, and the next ones work again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from services.common.db import create_engine
from services.common.errors import Unavailable
from services.common.uow import UnitOfWork
from services.localmesh.embedded import EmbeddedPostgres

pytestmark = pytest.mark.integration


async def test_units_of_work_heal_after_a_postgres_restart(tmp_path: Path) -> None:
    # A server of our own: restarting the session's would disturb every other test.
    postgres = EmbeddedPostgres(tmp_path / "postgres", preferred_port=0)
    await asyncio.to_thread(postgres.start)
    engine = create_engine(postgres.url.replace("postgresql://", "postgresql+asyncpg://"), "public")
    try:

        async def one() -> int:
            async with UnitOfWork(engine, "/test") as uow:
                return int((await uow.conn.execute(text("SELECT 1"))).scalar_one())

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
        assert failures <= 1, f"{failures} units of work failed after the restart"
        assert await one() == 1
    finally:
        await engine.dispose()
        await asyncio.to_thread(postgres.stop)
