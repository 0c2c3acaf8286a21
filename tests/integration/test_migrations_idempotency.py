"""Migrations under concurrency, and AIP-155 request ids under a race."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import create_engine
from services.common.errors import IdempotencyKeyReused
from services.common.idempotency import run_idempotent
from services.common.migrator import core_migrations, migrate
from services.common.uow import UnitOfWork
from tests.integration.conftest import TEST_TABLES

pytestmark = pytest.mark.integration


async def test_concurrent_starts_migrate_a_fresh_schema_exactly_once(database_url: str) -> None:
    schema = f"m_{uuid.uuid4().hex[:10]}"
    engines = [create_engine(database_url, schema, pool_size=1) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(migrate(e, schema, [*core_migrations(), TEST_TABLES]) for e in engines)
        )
        applied = sorted(len(r) for r in results)
        assert applied == [0, 0, len(core_migrations()) + 1]
        assert await migrate(engines[0], schema, [*core_migrations(), TEST_TABLES]) == []
    finally:
        async with engines[0].begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        for e in engines:
            await e.dispose()


async def test_same_request_id_runs_once_even_when_racing(engine: AsyncEngine) -> None:
    request_id = str(uuid.uuid4())
    request = StringValue(value="create thing")

    async def work(uow: UnitOfWork) -> StringValue:
        thing = uuid.uuid4()
        await uow.conn.execute("INSERT INTO things (id, name) VALUES (:id, 'x')", {"id": thing})
        await asyncio.sleep(0.05)  # widen the race window
        return StringValue(value=str(thing))

    def call() -> asyncio.Future[StringValue]:
        return asyncio.ensure_future(
            run_idempotent(
                lambda: UnitOfWork(engine, "/t"), "Create", request_id, request, StringValue, work
            )
        )

    responses = await asyncio.gather(*(call() for _ in range(10)))
    assert len({r.value for r in responses}) == 1
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM things"))).scalar_one() == 1

    with pytest.raises(IdempotencyKeyReused):
        await run_idempotent(
            lambda: UnitOfWork(engine, "/t"),
            "Create",
            request_id,
            StringValue(value="other"),
            StringValue,
            work,
        )
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM things"))).scalar_one() == 1
