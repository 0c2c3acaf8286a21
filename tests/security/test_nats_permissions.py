"""NATS users and permissions, as deployed: a real nats-server runs the rendered ConfigMap
`nats-config` of deploy/k8s (nats.conf and the nats-auth.conf it includes, unchanged), and
each service's real Messaging set-up (its stream and DEADLETTER, its durable consumers from
services/*/entrypoints/events.py, publish with ack, fetch and ack, dead-lettering a poison
event) works under its own user, while a forged publish (Order publishing
payments.succeeded), a forged dead letter, a foreign stream's update or purge, another
service's consumer and an anonymous connection are refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.errors import NoServersError
from nats.js.api import StreamConfig

from services.common.events import (
    DEADLETTER,
    EVENT_TYPES,
    OWN_STREAM,
    STREAMS,
    envelope,
    new_event,
    subject_of,
)
from services.common.inbox import Consumer
from services.common.jetstream import Messaging, ensure_durable_consumer
from services.common.security_settings import NatsSecurity
from services.credit.entrypoints import events as credit_entrypoints
from services.localmesh.embedded import _venv_binary
from services.order.entrypoints import events as order_entrypoints
from services.payment.entrypoints import events as payment_entrypoints
from tests.security.nats_auth import (
    SERVICE_USERS,
    DeployedNats,
    deployed_nats_config,
    service_passwords,
    start_deployed_nats,
)

pytestmark = pytest.mark.integration

SERVICES = tuple(SERVICE_USERS)


def service_consumers(service: str, messaging: Messaging) -> list[Consumer]:
    """The service's real Consumer definitions (nothing here applies an event)."""

    def no_database() -> Any:
        raise AssertionError("this test never applies an event")

    if service == "order":
        return order_entrypoints.consumers(no_database, messaging)
    if service == "credit":
        return credit_entrypoints.consumers(no_database, messaging, ttl_seconds=900)
    return payment_entrypoints.consumers(no_database, messaging)


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return service_passwords()


@pytest.fixture(scope="module")
def deployed_nats(
    tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]
) -> Iterator[DeployedNats]:
    server = start_deployed_nats(tmp_path_factory.mktemp("nats-deployed"), passwords)
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def connected(server: DeployedNats, service: str, password: str) -> AsyncIterator[Messaging]:
    """The service's Messaging as runtime.serve builds it (its own stream), connected."""
    messaging = Messaging(
        server.url,
        f"shop-{service}",
        NatsSecurity(user=service, password=password),
        streams=[OWN_STREAM[service], DEADLETTER],
    )
    task = asyncio.create_task(messaging.connect())
    try:
        await asyncio.wait_for(asyncio.shield(messaging.ready.wait()), 30)
        yield messaging
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await messaging.close()


async def raw_client(
    server: DeployedNats, user: str, password: str
) -> tuple[NatsClient, list[Exception]]:
    errors: list[Exception] = []

    async def on_error(error: Exception) -> None:
        errors.append(error)

    client = await nats.connect(
        server.url,
        user=user,
        password=password,
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=2,
    )
    return client, errors


async def stream_messages(messaging: Messaging, stream: str) -> int:
    info = await messaging.js.stream_info(stream)
    return int(info.state.messages)


async def settled(sub: Any, seconds: float = 5.0) -> Any:
    """The consumer's info once it has no acks pending (or the last one after `seconds`):
    the server applies an ack it has received a moment later, so an info read right after
    the flush may still count it (seen once in CI)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    info = await sub.consumer_info()
    while info.num_ack_pending and loop.time() < give_up:
        await asyncio.sleep(0.05)
        info = await sub.consumer_info()
    return info


def one_event_of(subject: str) -> tuple[str, bytes, dict[str, str]]:
    """A real envelope for an event type published on `subject`."""
    cls = next(c for c in EVENT_TYPES.values() if subject_of(c.DESCRIPTOR) == subject)
    env = envelope(new_event(cls), "/shop/test")
    return env.subject, env.payload, env.headers


async def test_each_service_sets_up_publishes_and_consumes_under_its_own_user(
    deployed_nats: DeployedNats, passwords: dict[str, str]
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        mesh = {
            service: await stack.enter_async_context(
                connected(deployed_nats, service, passwords[service])
            )
            for service in SERVICES
        }
        # Every service made its own stream (and only that one), and DEADLETTER.
        for service, messaging in mesh.items():
            assert await stream_messages(messaging, OWN_STREAM[service]) == 0
            assert await stream_messages(messaging, DEADLETTER) == 0

        # Each service's durable consumers, made and bound under its own user.
        bound: list[tuple[Consumer, Any]] = []
        for service, messaging in mesh.items():
            for consumer in service_consumers(service, messaging):
                sub = await ensure_durable_consumer(
                    messaging.js, consumer.stream, consumer.name, consumer.subjects
                )
                bound.append((consumer, sub))
        assert {c.name for c, _ in bound} == {
            "order-credits",
            "order-payments",
            "credit-orders",
            "credit-payments",
            "payment-orders",
        }

        # The owner publishes one event of every type anybody consumes (publish with ack,
        # as the outbox relay does).
        owner_of = {stream: service for service, stream in OWN_STREAM.items()}
        published: dict[str, int] = {}
        for consumer, _ in bound:
            publisher = mesh[owner_of[consumer.stream]]
            for subject in consumer.subjects:
                if subject in published:
                    continue
                subject, payload, headers = one_event_of(subject)
                ack = await publisher.js.publish(subject, payload, timeout=5, headers=headers)
                assert ack.stream == consumer.stream
                published[subject] = ack.seq

        # Each consumer fetches its events and acks them (a synchronous ack: refused acks
        # would time out).
        for consumer, sub in bound:
            messages = await sub.fetch(len(consumer.subjects), timeout=5)
            assert sorted(m.subject for m in messages) == consumer.subjects
            for message in messages:
                await message.ack_sync(timeout=5)
            info = await sub.consumer_info()
            assert info.num_ack_pending == 0, consumer.name
            assert info.ack_floor.stream_seq == max(published[s] for s in consumer.subjects)

        # Each consumer dead-letters poison events (bodies that are not protobuf) under its
        # service's user: published to DEADLETTER, then acked on its own stream.
        poison: dict[str, tuple[str, int]] = {}  # consumer -> (subject, sequence)
        for consumer, _ in bound:
            subject = consumer.subjects[0]
            _, _, headers = one_event_of(subject)
            publisher = mesh[owner_of[consumer.stream]]
            ack = await publisher.js.publish(subject, b"\xff\xff", timeout=5, headers=headers)
            poison[consumer.name] = (subject, ack.seq)
        for consumer, sub in bound:
            mine = [
                seq
                for c, _ in bound
                if c.stream == consumer.stream
                for subject, seq in [poison[c.name]]
                if subject in consumer.subjects
            ]
            messages = await sub.fetch(len(mine), timeout=5)
            await consumer.handle_batch(messages)
            await consumer.messaging.nc.flush()  # the ack is sent without waiting
            info = await settled(sub)
            assert info.num_ack_pending == 0, consumer.name
            assert info.ack_floor.stream_seq == max(mine), consumer.name
            # (Nobody but an operator may read dead letters: the count says they are there.)
            dead = await consumer.messaging.js.stream_info(DEADLETTER, subjects_filter=">")
            subject = poison[consumer.name][0]
            count = sum(
                1 for c, _ in bound if c.stream == consumer.stream and poison[c.name][0] == subject
            )
            assert (dead.state.subjects or {}).get(f"deadletter.{consumer.name}.{subject}") == count


FORGERIES = [
    (service, subject)
    for service in SERVICES
    for stream, pattern in STREAMS.items()
    if stream != OWN_STREAM[service]
    for subject in sorted({subject_of(c.DESCRIPTOR) for c in EVENT_TYPES.values()})
    if subject.startswith(pattern[:-1])
]


@pytest.mark.parametrize(("service", "subject"), FORGERIES, ids=[f"{s}->{t}" for s, t in FORGERIES])
async def test_a_forged_event_is_refused_and_never_lands_in_the_stream(
    deployed_nats: DeployedNats, passwords: dict[str, str], service: str, subject: str
) -> None:
    owner = next(s for s, stream in OWN_STREAM.items() if subject.startswith(STREAMS[stream][:-1]))
    async with (
        connected(deployed_nats, owner, passwords[owner]) as owner_messaging,
        connected(deployed_nats, service, passwords[service]) as forger,
    ):
        stream = OWN_STREAM[owner]
        before = await stream_messages(owner_messaging, stream)
        subject, payload, headers = one_event_of(subject)
        with pytest.raises((TimeoutError, nats.errors.NoRespondersError)):
            await forger.js.publish(subject, payload, timeout=1, headers=headers)
        await owner_messaging.nc.flush()
        assert await stream_messages(owner_messaging, stream) == before


async def test_order_cannot_forge_a_payment_succeeded(
    deployed_nats: DeployedNats, passwords: dict[str, str]
) -> None:
    """The issue's case, with the server's own word for it: a permissions violation."""
    async with connected(deployed_nats, "payment", passwords["payment"]) as payment:
        before = await stream_messages(payment, "PAYMENTS")
        client, errors = await raw_client(deployed_nats, "order", passwords["order"])
        try:
            subject, payload, headers = one_event_of("payments.succeeded")
            with pytest.raises(TimeoutError):
                await client.jetstream().publish(subject, payload, timeout=1, headers=headers)
            await client.publish(subject, payload, headers=headers)  # core NATS: no ack asked
            await client.flush()
        finally:
            await client.close()
        assert any("permissions violation for publish" in str(e).lower() for e in errors), errors
        assert await stream_messages(payment, "PAYMENTS") == before


@pytest.mark.parametrize(
    ("service", "subject"),
    [
        ("order", "deadletter.credit-orders.orders.created"),  # another service's consumer
        ("payment", "deadletter.order-payments.payments.succeeded"),
        ("credit", "deadletter.nobody.credits.reserved"),
    ],
)
async def test_a_dead_letter_for_another_services_consumer_is_refused(
    deployed_nats: DeployedNats, passwords: dict[str, str], service: str, subject: str
) -> None:
    async with connected(deployed_nats, service, passwords[service]) as messaging:
        before = await stream_messages(messaging, DEADLETTER)
        with pytest.raises((TimeoutError, nats.errors.NoRespondersError)):
            await messaging.js.publish(subject, b"forged", timeout=1)
        await messaging.nc.flush()
        assert await stream_messages(messaging, DEADLETTER) == before


@pytest.mark.parametrize(
    ("user", "request_subject"),
    [
        ("order", "$JS.API.STREAM.PURGE.PAYMENTS"),
        ("order", "$JS.API.STREAM.DELETE.PAYMENTS"),
        ("credit", "$JS.API.STREAM.MSG.DELETE.ORDERS"),
        ("credit", "$JS.API.STREAM.DELETE.CREDITS"),  # not even its own
        ("order", "$JS.API.CONSUMER.DELETE.CREDITS.order-credits"),
        # another service's consumer: reading or acking its events would hide them from it
        ("credit", "$JS.API.CONSUMER.MSG.NEXT.PAYMENTS.order-payments"),
        ("credit", "$JS.API.CONSUMER.DURABLE.CREATE.PAYMENTS.order-payments"),
        ("payment", "$JS.ACK.ORDERS.credit-orders.1.1.1.1.0"),
        ("payment", "$JS.API.STREAM.UPDATE.ORDERS"),
    ],
)
async def test_jetstream_api_beyond_a_services_own_is_refused(
    deployed_nats: DeployedNats, passwords: dict[str, str], user: str, request_subject: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        owners = [
            await stack.enter_async_context(connected(deployed_nats, s, passwords[s]))
            for s in SERVICES
        ]
        before = {
            stream: await stream_messages(owners[i], stream)
            for i, stream in enumerate(OWN_STREAM.values())
        }
        client, errors = await raw_client(deployed_nats, user, passwords[user])
        try:
            with pytest.raises(TimeoutError):
                await client.request(request_subject, b"{}", timeout=1)
        finally:
            await client.close()
        assert any("permissions violation for publish" in str(e).lower() for e in errors), errors
        after = {
            stream: await stream_messages(owners[i], stream)
            for i, stream in enumerate(OWN_STREAM.values())
        }
        assert after == before


async def test_a_foreign_stream_config_cannot_be_changed(
    deployed_nats: DeployedNats, passwords: dict[str, str]
) -> None:
    async with (
        connected(deployed_nats, "payment", passwords["payment"]) as payment,
        connected(deployed_nats, "credit", passwords["credit"]) as credit,
    ):
        with pytest.raises(TimeoutError):  # e.g. to drop payments.> from the stream
            await credit.js.update_stream(StreamConfig(name="PAYMENTS", subjects=["nothing.>"]))
        assert (await payment.js.stream_info("PAYMENTS")).config.subjects == ["payments.>"]


async def test_subscribing_to_events_directly_is_refused(
    deployed_nats: DeployedNats, passwords: dict[str, str]
) -> None:
    client, errors = await raw_client(deployed_nats, "credit", passwords["credit"])
    try:
        await client.subscribe("payments.>")
        await client.flush()
        await asyncio.sleep(0.2)
    finally:
        await client.close()
    assert any("permissions violation for subscription" in str(e).lower() for e in errors)


@pytest.mark.parametrize("credentials", [{}, {"user": "order", "password": "wrong"}])
async def test_anonymous_and_wrong_password_connections_are_refused(
    deployed_nats: DeployedNats, credentials: dict[str, str]
) -> None:
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        client = await nats.connect(
            deployed_nats.url, allow_reconnect=False, connect_timeout=2, **credentials
        )
        await client.close()


@pytest.mark.parametrize("overlay", ["base", "kind", "production"])
def test_the_rendered_nats_config_includes_the_permissions_and_passes_nats_server_t(
    tmp_path: Path, overlay: str
) -> None:
    files = deployed_nats_config(overlay)
    base_auth = (Path(__file__).resolve().parents[2] / "deploy/k8s/base/nats-auth.conf").read_text()
    assert files.get("nats-auth.conf") == base_auth
    assert "include nats-auth.conf" in files["nats.conf"].splitlines()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {**os.environ, "SERVER_NAME": "nats-0"}
    env.update({variable: secrets.token_hex(8) for variable in SERVICE_USERS.values()})
    command = [_venv_binary("nats-server"), "-t", "-c", str(tmp_path / "nats.conf")]
    checked = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr + checked.stdout
    # Without the Secret's passwords the server refuses to start (no silent empty password).
    env.pop("NATS_PAYMENT_PASSWORD")
    missing = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0
    assert "NATS_PAYMENT_PASSWORD" in missing.stderr + missing.stdout
