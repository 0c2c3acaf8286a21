"""Nothing grows forever: the pruner deletes what is past its window, a bounded batch at a
time, and nothing a duplicate could still need (real PostgreSQL, real NATS)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import nats
import pytest
from nats.js.api import StorageType, StreamConfig
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import create_engine
from services.common.events import STREAMS, envelope, new_event
from services.common.idempotency import run_idempotent
from services.common.jetstream import ensure_streams
from services.common.migrator import core_migrations, load_migrations, migrate
from services.common.retention import (
    DUPLICATE_WINDOW_SECONDS,
    Pruner,
    Retention,
    core_rules,
)
from services.common.uow import UnitOfWork
from services.credit import bootstrap as credit
from services.localmesh.embedded import EmbeddedNats
from services.payment import bootstrap as payment
from shop.credit.v1 import events_pb2 as credit_events
from shop.order.v1 import events_pb2
from tests.conftest import Infra
from tests.integration.test_inbox import (
    CUSTOMER,
    _bump,
    _wait_until_counted,
    counter,
    running_consumer,
)

pytestmark = pytest.mark.integration

DAY = 24 * 3600
DEFAULTS = Retention()  # a week of stream, inbox and request ids; a day of sent outbox rows


async def count(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def add_outbox_rows(engine: AsyncEngine, n: int, *, age: timedelta, sent: bool) -> None:
    """`n` outbox rows written `age` ago, published then too when `sent`."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox (event_id, subject, event_type, payload, headers,"
                " created_at, published_at)"
                " SELECT gen_random_uuid(), 'credits.topped_up', 't', '\\x00', '{}',"
                " now() - CAST(:age AS interval),"
                " CASE WHEN :sent THEN now() - CAST(:age AS interval) END"
                " FROM generate_series(1, :n)"
            ),
            {"n": n, "age": age, "sent": sent},
        )


async def add_inbox_rows(engine: AsyncEngine, n: int, *, age: timedelta) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO inbox (consumer, event_id, subject, processed_at)"
                " SELECT 'old', gen_random_uuid(), 'orders.cancelled',"
                " now() - CAST(:age AS interval) FROM generate_series(1, :n)"
            ),
            {"n": n, "age": age},
        )


async def add_request_ids(engine: AsyncEngine, n: int, *, age: timedelta) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO idempotency_keys (operation, request_id, fingerprint, response,"
                " created_at) SELECT 'Old', gen_random_uuid(), '\\x01', '\\x02',"
                " now() - CAST(:age AS interval) FROM generate_series(1, :n)"
            ),
            {"n": n, "age": age},
        )


async def test_prune_deletes_only_rows_past_the_window_in_batches_of_the_given_size(
    engine: AsyncEngine,
) -> None:
    await add_outbox_rows(engine, 25, age=timedelta(days=2), sent=True)
    await add_outbox_rows(engine, 5, age=timedelta(hours=23), sent=True)
    await add_inbox_rows(engine, 12, age=timedelta(days=8))
    await add_inbox_rows(engine, 4, age=timedelta(days=6))
    await add_request_ids(engine, 3, age=timedelta(days=8))
    await add_request_ids(engine, 2, age=timedelta(hours=1))
    pruner = Pruner(engine, core_rules(DEFAULTS), batch=10, pause_seconds=0)
    outbox, inbox, keys = pruner.rules

    assert [await pruner.prune_batch(outbox) for _ in range(4)] == [10, 10, 5, 0]
    assert await count(engine, "SELECT count(*) FROM outbox") == 5
    assert (
        await count(
            engine, "SELECT count(*) FROM outbox WHERE published_at < now() - interval '1 day'"
        )
        == 0
    )

    assert await pruner.prune() == {"outbox": 0, "inbox": 12, "idempotency_keys": 3}
    assert await count(engine, "SELECT count(*) FROM inbox") == 4
    assert await count(engine, "SELECT count(*) FROM idempotency_keys") == 2
    assert [await pruner.prune_batch(rule) for rule in (outbox, inbox, keys)] == [0, 0, 0]


async def test_unsent_outbox_rows_survive_any_age(engine: AsyncEngine) -> None:
    await add_outbox_rows(engine, 3, age=timedelta(days=3650), sent=False)
    await add_outbox_rows(engine, 2, age=timedelta(days=3650), sent=True)
    sent_rows_kept_for_no_time = core_rules(Retention(outbox_seconds=0))[:1]
    pruner = Pruner(engine, sent_rows_kept_for_no_time, batch=10, pause_seconds=0)

    assert await pruner.prune() == {"outbox": 2}
    assert await count(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 3
    assert await count(engine, "SELECT count(*) FROM outbox") == 3


async def test_an_event_inside_the_inbox_window_is_still_deduplicated_after_a_prune(
    engine: AsyncEngine, infra: Infra
) -> None:
    order_id, marker = str(uuid.uuid4()), str(uuid.uuid4())
    event = new_event(
        events_pb2.OrderCancelled, order_id=order_id, customer_id=CUSTOMER, reason="test"
    )
    env = envelope(event, "/shop/order")
    async with running_consumer(engine, infra, _bump):
        nc = await nats.connect(infra.nats_url)
        js = nc.jetstream()
        await js.publish(env.subject, env.payload, headers=env.headers)
        await _wait_until_counted(engine, [order_id], 15)
        assert await counter(engine, order_id) == 1

        # Applied six days ago (inside the week), among older rows that are past it.
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE inbox SET processed_at = now() - interval '6 days'"),
            )
        await add_inbox_rows(engine, 30, age=timedelta(days=8))
        pruned = await Pruner(engine, core_rules(DEFAULTS), batch=7, pause_seconds=0).prune()
        assert pruned["inbox"] == 30
        # (The stream is shared: this fresh consumer applies earlier tests' events too.)
        assert (
            await count(engine, f"SELECT count(*) FROM inbox WHERE event_id = '{event.event_id}'")
            == 1
        )
        assert not await count(
            engine, "SELECT count(*) FROM inbox WHERE processed_at < now() - interval '7 days'"
        )

        # The same event delivered again (a new message id: JetStream's dedup cannot help),
        # then a marker behind it: once the marker is applied, the duplicate was handled.
        await js.publish(
            env.subject, env.payload, headers={**env.headers, "Nats-Msg-Id": str(uuid.uuid4())}
        )
        after = envelope(
            new_event(events_pb2.OrderCancelled, order_id=marker, customer_id=CUSTOMER),
            "/shop/order",
        )
        await js.publish(after.subject, after.payload, headers=after.headers)
        await nc.close()
        await _wait_until_counted(engine, [marker], 15)

    assert await counter(engine, order_id) == 1, "the redelivered event was applied again"
    assert await counter(engine, marker) == 1


async def test_a_request_id_inside_its_window_returns_the_first_answer_after_a_prune(
    engine: AsyncEngine,
) -> None:
    runs = 0

    async def top_up(uow: UnitOfWork) -> credit_events.CreditsToppedUp:
        nonlocal runs
        runs += 1
        await uow.conn.execute(
            "INSERT INTO things (id, name) VALUES (:id, 'top-up')", {"id": uuid.uuid4()}
        )
        return new_event(credit_events.CreditsToppedUp, customer_id=str(uuid.uuid4()))

    request_id = str(uuid.uuid4())
    request = credit_events.CreditsToppedUp(request_id=request_id)

    async def call() -> credit_events.CreditsToppedUp:
        return await run_idempotent(
            lambda: UnitOfWork(engine, "/test"),
            "TopUp",
            request_id,
            request,
            credit_events.CreditsToppedUp,
            top_up,
        )

    first = await call()
    async with engine.begin() as conn:  # six days ago: inside the week
        await conn.execute(
            text("UPDATE idempotency_keys SET created_at = now() - interval '6 days'")
        )
    await add_request_ids(engine, 15, age=timedelta(days=8))
    pruned = await Pruner(engine, core_rules(DEFAULTS), batch=4, pause_seconds=0).prune()
    assert pruned["idempotency_keys"] == 15

    again = await call()
    assert again == first
    assert runs == 1
    assert await count(engine, "SELECT count(*) FROM things") == 1


@pytest.fixture
async def service_engine(
    database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncEngine]:
    """A fresh schema with the core's tables and one service's own (the test's param)."""
    service: str = request.param
    schema = f"r_{uuid.uuid4().hex[:10]}"
    engine = create_engine(database_url, schema, pool_size=2)
    own = load_migrations(f"services.{service}.migrations", service)
    await migrate(engine, schema, [*core_migrations(), *own])
    yield engine
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await engine.dispose()


@pytest.mark.parametrize("service_engine", ["credit"], indirect=True)
async def test_credits_cancelled_orders_are_kept_as_long_as_the_inbox(
    service_engine: AsyncEngine,
) -> None:
    """A cancel noted before its order's orders.created stops that late event from placing a
    hold; the note must last as long as the event can still arrive (the stream's age)."""
    engine = service_engine
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO cancelled_orders (order_id, cancelled_at)"
                " SELECT gen_random_uuid(), now() - CAST(age AS interval)"
                " FROM unnest(ARRAY['8 days', '8 days', '8 days', '6 days', '1 hour']) AS age"
            )
        )
    rules = [*core_rules(DEFAULTS), *credit.prune_rules(DEFAULTS)]
    assert await Pruner(engine, rules, batch=2, pause_seconds=0).prune() == {
        "outbox": 0,
        "inbox": 0,
        "idempotency_keys": 0,
        "cancelled_orders": 3,
    }
    assert await count(engine, "SELECT count(*) FROM cancelled_orders") == 2


@pytest.mark.parametrize("service_engine", ["payment"], indirect=True)
async def test_payments_cancelled_orders_go_once_resolved_and_past_the_window(
    service_engine: AsyncEngine,
) -> None:
    engine = service_engine
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO cancelled_orders (order_id, noted_at, resolved_at)"
                " SELECT gen_random_uuid(), now() - interval '9 days', resolved"
                " FROM unnest(ARRAY[now() - interval '8 days', now() - interval '6 days',"
                " NULL]) AS resolved"
            )
        )
    rules = payment.prune_rules(DEFAULTS)
    assert await Pruner(engine, rules, batch=10, pause_seconds=0).prune() == {"cancelled_orders": 1}
    # the open one stays whatever its age: the compensation job still has to look at it
    assert await count(engine, "SELECT count(*) FROM cancelled_orders") == 2
    assert await count(engine, "SELECT count(*) FROM cancelled_orders WHERE resolved_at IS NULL")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A NATS of our own: these tests change the streams' limits."""
    server = EmbeddedNats(tmp_path / "nats", preferred_port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_streams_carry_the_age_and_size_limits_even_when_they_already_existed(
    nats_server: EmbeddedNats,
) -> None:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        # ORDERS as the code before the limits made it: unlimited.
        await js.add_stream(
            StreamConfig(
                name="ORDERS",
                subjects=[STREAMS["ORDERS"]],
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
            )
        )
        retention = Retention(stream_max_age_seconds=3 * DAY, stream_max_bytes=2**30)
        await ensure_streams(js, 1, retention=retention)
        for name in STREAMS:
            config = (await js.stream_info(name)).config
            assert config.max_age == 3 * DAY, name
            assert config.max_bytes == 2**30, name
            # a duplicate the stream's dedup forgets, the inbox still catches
            assert config.duplicate_window == DUPLICATE_WINDOW_SECONDS
            assert config.duplicate_window <= retention.inbox_seconds

        await ensure_streams(js, 1, retention=DEFAULTS)  # the defaults, on an existing deployment
        config = (await js.stream_info("ORDERS")).config
        assert config.max_age == 7 * DAY
        assert config.max_bytes == -1
    finally:
        await nc.close()
