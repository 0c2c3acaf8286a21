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
from services.common.idempotency import RequestLedger, run_idempotent
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


def _ledger(engine: AsyncEngine) -> RequestLedger:
    return RequestLedger(lambda: UnitOfWork(engine, "/t"))


async def test_a_ledger_runs_the_reads_while_its_claim_waits(engine: AsyncEngine) -> None:
    # A claim held up (here by another transaction inserting the same id) must not hold up
    # the use case's reads: they start at once; the work waits for the claim.
    ledger, request_id, request = _ledger(engine), str(uuid.uuid4()), StringValue(value="pay")
    read, worked = asyncio.Event(), asyncio.Event()

    async def reads() -> str:
        read.set()
        return "read"

    async def work(what: str) -> StringValue:
        worked.set()
        return StringValue(value=f"worked on {what}")

    async with engine.connect() as blocker:
        await blocker.execute(
            text(
                "INSERT INTO idempotency_keys (operation, request_id, fingerprint, response)"
                " VALUES ('Pay', :id, '', '')"
            ),
            {"id": request_id},
        )
        call = asyncio.ensure_future(
            ledger.run("Pay", request_id, request, StringValue, reads, work)
        )
        await asyncio.wait_for(read.wait(), 5)
        await asyncio.sleep(0.1)
        assert not worked.is_set()  # the claim is still waiting for the blocker
        await blocker.rollback()
    assert await asyncio.wait_for(call, 5) == StringValue(value="worked on read")
    stored = await ledger.replay("Pay", request_id, request)
    assert stored == StringValue(value="worked on read").SerializeToString()


async def test_a_ledger_drops_the_reads_of_a_replay_or_a_reused_id(engine: AsyncEngine) -> None:
    ledger, request_id, request = _ledger(engine), str(uuid.uuid4()), StringValue(value="pay")
    works = 0
    dropped: list[str] = []

    async def work(what: str) -> StringValue:
        nonlocal works
        works += 1
        return StringValue(value=what)

    async def reads_that_never_end() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            dropped.append("reads")
            raise
        raise AssertionError("unreachable")

    async def quick_reads() -> str:
        return "first"

    first = await ledger.run("Pay", request_id, request, StringValue, quick_reads, work)
    again = await ledger.run("Pay", request_id, request, StringValue, reads_that_never_end, work)
    assert (again, works, dropped) == (first, 1, ["reads"])

    with pytest.raises(IdempotencyKeyReused):
        await ledger.run(
            "Pay", request_id, StringValue(value="other"), StringValue, reads_that_never_end, work
        )
    assert (works, dropped) == (1, ["reads", "reads"])
