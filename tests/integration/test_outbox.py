"""The transactional outbox and its relay, against real PostgreSQL and a real NATS."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.events import new_event
from services.common.jetstream import Messaging
from services.common.outbox import OutboxRelay, OutboxRow
from services.common.uow import OnCommit, UnitOfWork
from services.localmesh.embedded import EmbeddedNats
from shop.credit.v1 import events_pb2

pytestmark = pytest.mark.integration

CUSTOMER = "a8098c1a-f86e-11da-bd1a-00112444be1e"


def topped_up(request_id: str | None = None) -> events_pb2.CreditsToppedUp:
    return new_event(
        events_pb2.CreditsToppedUp,
        customer_id=CUSTOMER,
        request_id=request_id or str(uuid.uuid4()),
    )


async def count(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def test_business_row_and_outbox_row_commit_together(engine: AsyncEngine) -> None:
    async with UnitOfWork(engine, "/test") as uow:
        await uow.conn.execute(
            "INSERT INTO things (id, name) VALUES (:id, 'kept')", {"id": uuid.uuid4()}
        )
        uow.emit(topped_up())
    assert await count(engine, "SELECT count(*) FROM things") == 1
    assert await count(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1


async def test_business_row_and_outbox_row_roll_back_together(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with UnitOfWork(engine, "/test") as uow:
            await uow.conn.execute(
                "INSERT INTO things (id, name) VALUES (:id, 'lost')", {"id": uuid.uuid4()}
            )
            uow.emit(topped_up())
            raise RuntimeError("boom")
    assert await count(engine, "SELECT count(*) FROM things") == 0
    assert await count(engine, "SELECT count(*) FROM outbox") == 0


async def test_a_failed_commit_writes_neither(engine: AsyncEngine) -> None:
    thing = uuid.uuid4()
    async with UnitOfWork(engine, "/test") as uow:
        await uow.conn.execute("INSERT INTO things (id, name) VALUES (:id, 'a')", {"id": thing})
    event = topped_up()
    with pytest.raises(Exception, match="duplicate key"):
        async with UnitOfWork(engine, "/test") as uow:
            uow.emit(event)  # queued first, the failing statement comes after
            await uow.conn.execute("INSERT INTO things (id, name) VALUES (:id, 'b')", {"id": thing})
    assert await count(engine, "SELECT count(*) FROM outbox") == 0


async def test_an_autocommit_unit_of_work_commits_each_statement_and_emits_nothing(
    engine: AsyncEngine,
) -> None:
    with pytest.raises(RuntimeError, match="after the insert"):
        async with UnitOfWork(engine, "/test").autocommit() as uow:
            await uow.conn.execute(
                "INSERT INTO things (id, name) VALUES (:id, 'single')", {"id": uuid.uuid4()}
            )
            with pytest.raises(RuntimeError, match="cannot emit"):
                uow.emit(topped_up())
            raise RuntimeError("after the insert")
    assert await count(engine, "SELECT count(*) FROM things") == 1  # committed on its own
    assert await count(engine, "SELECT count(*) FROM outbox") == 0


async def test_one_statement_carries_its_event_and_commits_both_at_once(
    engine: AsyncEngine,
) -> None:
    handed: list[OutboxRow] = []
    event = topped_up()
    insert = "INSERT INTO things (id, name) VALUES (:id, :name) RETURNING id, name"
    async with UnitOfWork(engine, "/test", handed.extend).autocommit() as uow:
        row = await uow.with_events(event).fetchrow(insert, {"id": uuid.uuid4(), "name": "one"})
    assert row is not None
    assert row["name"] == "one"  # the statement's own RETURNING row
    # handed to the relay, as after a transaction's commit
    assert [r.event_id for r in handed] == [event.event_id]
    async with engine.connect() as conn:
        outbox = (await conn.execute(text("SELECT event_id, subject, headers FROM outbox"))).all()
    assert [(str(r.event_id), r.subject) for r in outbox] == [(event.event_id, "credits.topped_up")]
    assert outbox[0].headers["ce-type"] == "shop.credit.v1.CreditsToppedUp"


async def test_a_statement_that_changes_nothing_writes_no_event(engine: AsyncEngine) -> None:
    handed: list[OutboxRow] = []
    async with UnitOfWork(engine, "/test", handed.extend).autocommit() as uow:
        row = await uow.with_events(topped_up(), topped_up()).fetchrow(
            "UPDATE things SET name = 'x' WHERE id = :id RETURNING id", {"id": uuid.uuid4()}
        )
    assert row is None
    assert handed == []
    assert await count(engine, "SELECT count(*) FROM outbox") == 0


async def test_a_failing_statement_writes_neither_its_row_nor_its_events(
    engine: AsyncEngine,
) -> None:
    thing = uuid.uuid4()
    insert = "INSERT INTO things (id, name) VALUES (:id, 'a') RETURNING id"
    async with UnitOfWork(engine, "/test").autocommit() as uow:
        await uow.conn.fetchrow(insert, {"id": thing})
    with pytest.raises(Exception, match="duplicate key"):
        async with UnitOfWork(engine, "/test").autocommit() as uow:
            await uow.with_events(topped_up()).fetchrow(insert, {"id": thing})
    assert await count(engine, "SELECT count(*) FROM things") == 1
    assert await count(engine, "SELECT count(*) FROM outbox") == 0


async def test_with_events_is_for_one_statement_outside_a_transaction(
    engine: AsyncEngine,
) -> None:
    async with UnitOfWork(engine, "/test") as uow:
        with pytest.raises(RuntimeError, match="emit"):
            uow.with_events(topped_up())
    insert = "INSERT INTO things (id, name) VALUES (:id, 'a') RETURNING id"
    async with UnitOfWork(engine, "/test").autocommit() as uow:
        sql = uow.with_events(topped_up())
        await sql.fetchrow(insert, {"id": uuid.uuid4()})
        with pytest.raises(RuntimeError, match="one statement"):
            await sql.fetchrow(insert, {"id": uuid.uuid4()})
    assert await count(engine, "SELECT count(*) FROM outbox") == 1


async def stream_messages(url: str, stream: str) -> list[Msg]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            "credits.>", stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        messages: list[Msg] = []
        while True:
            try:
                batch = await sub.fetch(100, timeout=1)
            except TimeoutError:
                return messages
            messages.extend(batch)
    finally:
        await nc.close()


UNPUBLISHED = "SELECT count(*) FROM outbox WHERE published_at IS NULL"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A NATS of our own: the relay tests stop it, and read its CREDITS stream whole."""
    server = EmbeddedNats(tmp_path / "nats", preferred_port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def connected(url: str, name: str) -> AsyncIterator[Messaging]:
    messaging = Messaging(url, name)
    connect = asyncio.create_task(messaging.connect())
    try:
        await asyncio.wait_for(messaging.ready.wait(), 20)
        yield messaging
    finally:
        connect.cancel()
        await messaging.close()


async def write_events(engine: AsyncEngine, n: int, on_commit: OnCommit | None = None) -> list[str]:
    """Commit `n` units of work with one event each; returns the event ids in order."""
    ids = []
    for _ in range(n):
        async with UnitOfWork(engine, "/shop/credit", on_commit) as uow:
            event = topped_up()
            uow.emit(event)
        ids.append(event.event_id)
    return ids


def message_ids(messages: list[Msg]) -> list[str]:
    return [m.headers["Nats-Msg-Id"] for m in messages if m.headers]


async def test_relay_publishes_every_row_exactly_once_across_a_nats_restart(
    engine: AsyncEngine, nats_server: EmbeddedNats
) -> None:
    async with connected(nats_server.url, "relay-test") as messaging:
        relay = OutboxRelay(
            engine, messaging, poll_seconds=0.1, publish_timeout=1.0, sweep_after_seconds=2.0
        )
        running = asyncio.create_task(relay.run())

        first = await write_events(engine, 20, relay.committed)
        await wait_until(lambda: count(engine, UNPUBLISHED), 0)

        nats_server.stop()  # NATS goes away; writes keep committing into the outbox
        second = await write_events(engine, 20, relay.committed)
        await asyncio.sleep(1.5)  # the relay tries, fails and backs off meanwhile
        assert await count(engine, UNPUBLISHED) > 0

        nats_server.start()  # same port, same JetStream store
        await wait_until(lambda: count(engine, UNPUBLISHED), 0, timeout=30)
        running.cancel()

    messages = await stream_messages(nats_server.url, "CREDITS")
    assert sorted(message_ids(messages)) == sorted(first + second)  # all of them, none twice
    sample = messages[0]
    assert sample.subject == "credits.topped_up"
    assert sample.headers is not None
    assert sample.headers["ce-type"] == "shop.credit.v1.CreditsToppedUp"
    assert sample.headers["ce-id"] == sample.headers["Nats-Msg-Id"]
    assert events_pb2.CreditsToppedUp.FromString(sample.data).event_id == sample.headers["ce-id"]


class _FailingPublishes:
    """The real JetStream context, except that the publish number `fail_from` fails: when it
    is sent (as if NATS went away in the middle of a batch), or, with `ack_fails`, when its
    acknowledgement comes back (that message never reaches the stream; the rest do)."""

    def __init__(self, messaging: Messaging, fail_from: int, ack_fails: bool = False) -> None:
        self._js = messaging.js
        self._calls = 0
        self._fail_from = fail_from
        self._ack_fails = ack_fails

    @property
    def js(self) -> _FailingPublishes:
        return self

    async def publish_async(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        self._calls += 1
        if self._calls == self._fail_from and self._ack_fails:
            refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            refused.set_exception(OSError("no ack: the stream refused it"))
            return refused
        if self._calls >= self._fail_from and not self._ack_fails:
            raise OSError("NATS went away")
        return await self._js.publish_async(*args, **kwargs)


def sweeper(engine: AsyncEngine, messaging: Messaging | _FailingPublishes) -> OutboxRelay:
    """A relay whose sweep takes every unsent row, however fresh (publishing through
    `messaging`, or through one whose publishes fail)."""
    return OutboxRelay(engine, messaging, sweep_after_seconds=0)  # type: ignore[arg-type]


async def test_a_batch_cut_short_by_a_failed_publish_marks_only_what_went_out(
    engine: AsyncEngine, nats_server: EmbeddedNats
) -> None:
    async with connected(nats_server.url, "relay-partial-test") as messaging:
        ids = await write_events(engine, 5)

        failing = sweeper(engine, _FailingPublishes(messaging, fail_from=3))
        with pytest.raises(OSError, match="went away"):
            await failing.publish_pending()
        assert await count(engine, UNPUBLISHED) == 3
        assert message_ids(await stream_messages(nats_server.url, "CREDITS")) == ids[:2]

        assert await sweeper(engine, messaging).publish_pending() == 3
        assert await count(engine, UNPUBLISHED) == 0
        sent = await stream_messages(nats_server.url, "CREDITS")
        assert message_ids(sent) == ids  # in order, each once


async def test_a_batch_with_an_unacknowledged_message_marks_only_what_came_before_it(
    engine: AsyncEngine, nats_server: EmbeddedNats
) -> None:
    """The batch is sent at once and its acks awaited together: a missing ack in the middle
    leaves that row and the ones after it unmarked; sent again, the stream has each once
    (the ones JetStream had already stored are dropped by their Nats-Msg-Id)."""
    async with connected(nats_server.url, "relay-ack-test") as messaging:
        ids = await write_events(engine, 5)

        failing = sweeper(engine, _FailingPublishes(messaging, 3, ack_fails=True))
        with pytest.raises(OSError, match="refused"):
            await failing.publish_pending()
        assert await count(engine, UNPUBLISHED) == 3

        assert await sweeper(engine, messaging).publish_pending() == 3
        assert await count(engine, UNPUBLISHED) == 0
        sent = message_ids(await stream_messages(nats_server.url, "CREDITS"))
        assert sorted(sent) == sorted(ids)  # each once; the retried one after the others
        assert sent[:2] == ids[:2]


async def test_just_committed_events_are_published_at_once_without_a_sweep(
    engine: AsyncEngine, nats_server: EmbeddedNats
) -> None:
    """The unit of work hands its rows to the relay, which publishes and marks them; the
    sweep (first pass at start, then not for a minute; and only rows 10 s old) plays no
    part."""
    async with connected(nats_server.url, "relay-committed-test") as messaging:
        relay = OutboxRelay(engine, messaging, poll_seconds=60)
        running = asyncio.create_task(relay.run())
        await asyncio.sleep(0.2)  # past the first sweep
        ids = await write_events(engine, 5, relay.committed)
        await wait_until(lambda: count(engine, UNPUBLISHED), 0, timeout=5)
        running.cancel()
    assert message_ids(await stream_messages(nats_server.url, "CREDITS")) == ids


async def test_just_committed_events_that_fail_to_publish_are_left_for_the_sweep(
    engine: AsyncEngine, nats_server: EmbeddedNats
) -> None:
    async with connected(nats_server.url, "relay-committed-fail-test") as messaging:
        handed: list[OutboxRow] = []
        ids = await write_events(engine, 5, handed.extend)
        assert [row.event_id for row in handed] == ids

        failing = sweeper(engine, _FailingPublishes(messaging, fail_from=3))
        failing.committed(handed)
        assert await failing.publish_committed() == 2  # no error: the sweep takes the rest
        assert await count(engine, UNPUBLISHED) == 5  # the marks are written together, later
        await asyncio.sleep(0.3)
        marking = datetime.now(UTC)
        assert await failing.mark_sent() == 2
        assert await count(engine, UNPUBLISHED) == 3
        # each marked with the time JetStream acknowledged it, not the later time of the mark
        async with engine.connect() as conn:
            marks = (
                (
                    await conn.execute(
                        text("SELECT published_at FROM outbox WHERE published_at IS NOT NULL")
                    )
                )
                .scalars()
                .all()
            )
        assert len(marks) == 2
        assert all(mark < marking for mark in marks)

        assert await OutboxRelay(engine, messaging).publish_pending() == 0  # too fresh
        assert await sweeper(engine, messaging).publish_pending() == 3
        assert await count(engine, UNPUBLISHED) == 0
        assert message_ids(await stream_messages(nats_server.url, "CREDITS")) == ids


async def wait_until(probe: object, expected: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()  # type: ignore[operator]
        if value == expected:
            return
        if loop.time() > deadline:
            raise AssertionError(f"still {value}, expected {expected} after {timeout}s")
        await asyncio.sleep(0.1)
