"""The real `shopctl` (the console script) as a subprocess against the running mesh: exit
statuses, human and `--json` output; a paid-then-refunded order's timeline in causal order;
`events tail` prints an event published after it started; dead letters listed, shown,
replayed and discarded; a bad flag or an unreachable service: one clear line, non-zero."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest

from services.common.events import envelope, new_event
from services.localmesh.mesh import LocalMesh
from shop.common.v1 import money_pb2
from shop.credit.v1 import credit_pb2
from shop.order.v1 import order_pb2
from shop.payment.v1 import events_pb2 as payment_events
from tests.e2e.shop import Shop
from tests.ids import new_id

pytestmark = pytest.mark.e2e

SHOPCTL = Path(sys.executable).parent / "shopctl"


def nats_url(mesh: LocalMesh) -> str:
    assert mesh.nats_url is not None
    return mesh.nats_url


def flags(mesh: LocalMesh) -> list[str]:
    s = mesh.services
    return [
        f"--order={s['order'].target}",
        f"--credit={s['credit'].target}",
        f"--payment={s['payment'].target}",
        f"--nats={mesh.nats_url}",
        f"--order-http={s['order'].http_address}",
        f"--credit-http={s['credit'].http_address}",
        f"--payment-http={s['payment'].http_address}",
    ]


def shopctl(
    mesh: LocalMesh, *args: str, json_out: bool = False
) -> subprocess.CompletedProcess[str]:
    command = [str(SHOPCTL), *flags(mesh), *(["--json"] if json_out else []), *args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
async def shop(mesh: LocalMesh) -> AsyncIterator[Shop]:
    channels = {name: grpc.aio.insecure_channel(s.target) for name, s in mesh.services.items()}
    try:
        yield Shop.connect(channels)
    finally:
        for channel in channels.values():
            await channel.close()


async def refunded_order(shop: Shop) -> order_pb2.Order:
    customer = shop.new_customer()
    await shop.top_up(customer, 10_000)
    order = await shop.reserved_order(customer, 4_000)
    payment = (await shop.pay(order)).payment
    await shop.order_in(order.order_id, order_pb2.ORDER_STATUS_PAID)
    # Credit captures the hold on its own consumer: wait for it too, so the refund comes
    # after credits.captured in causal order.
    await shop.reservation_in(order.reservation_id, credit_pb2.RESERVATION_STATE_CAPTURED)
    await shop.refund(payment.payment_id)
    return await shop.order_in(order.order_id, order_pb2.ORDER_STATUS_REFUNDED)


async def test_status_reports_every_service_and_stream(mesh: LocalMesh) -> None:
    human = await asyncio.to_thread(shopctl, mesh, "status")
    assert human.returncode == 0, human.stderr
    for name in ("order", "credit", "payment"):
        assert f"{name} " in human.stdout
    assert human.stdout.count("SERVING") == 3
    for stream in ("ORDERS", "CREDITS", "PAYMENTS", "DEADLETTER"):
        assert f"stream {stream}" in human.stdout
    records = lines(await asyncio.to_thread(shopctl, mesh, "status", json_out=True))
    services = [r for r in records if r["kind"] == "service"]
    health = {r["service"]: r["health"] for r in services}
    assert health == {"order": "SERVING", "credit": "SERVING", "payment": "SERVING"}
    # the running version and the outbox backlog, read from each service's /metrics
    assert {r["version"] for r in services} == {importlib.metadata.version("shop-mesh")}
    assert all(isinstance(r["outbox_pending"], int) and r["outbox_pending"] >= 0 for r in services)
    assert "outbox backlog" in human.stdout
    assert {r["stream"] for r in records if r["kind"] == "stream"} >= {"ORDERS", "DEADLETTER"}
    assert {r["consumer"] for r in records if r["kind"] == "consumer"} >= {
        "credit-orders",
        "order-credits",
        "order-payments",
    }


async def test_timeline_of_a_paid_then_refunded_order_is_in_causal_order(
    mesh: LocalMesh, shop: Shop
) -> None:
    order = await refunded_order(shop)
    await asyncio.sleep(1.0)  # the last events reach their streams
    result = await asyncio.to_thread(
        shopctl, mesh, "orders", "timeline", order.order_id, json_out=True
    )
    assert result.returncode == 0, result.stderr
    records = lines(result)
    subjects = [r["subject"] for r in records if r["kind"] == "event"]
    causal = [
        "orders.created",
        "credits.reserved",
        "payments.requested",
        "payments.succeeded",
        "credits.captured",
        "payments.refund_requested",
        "payments.refunded",
    ]
    assert [s for s in subjects if s in causal] == causal, subjects
    gaps = [r["gap_seconds"] for r in records if r["kind"] == "event"]
    assert gaps[0] == 0
    assert all(g >= 0 for g in gaps)
    now = {r["kind"]: r[r["kind"]] for r in records if r["kind"] != "event"}
    assert now["order"]["status"] == "ORDER_STATUS_REFUNDED"
    assert now["payment"]["order_id"] == order.order_id
    assert now["hold"] is not None

    human = await asyncio.to_thread(shopctl, mesh, "orders", "timeline", order.order_id)
    assert human.returncode == 0
    assert "payments.refunded" in human.stdout
    assert "now: order" in human.stdout
    assert "REFUNDED" in human.stdout


async def test_orders_get_human_json_and_not_found(mesh: LocalMesh, shop: Shop) -> None:
    order = await refunded_order(shop)
    human = await asyncio.to_thread(shopctl, mesh, "orders", "get", order.order_id)
    assert human.returncode == 0
    assert "REFUNDED" in human.stdout
    [record] = lines(
        await asyncio.to_thread(shopctl, mesh, "orders", "get", order.order_id, json_out=True)
    )
    assert record["order_id"] == order.order_id
    missing = await asyncio.to_thread(shopctl, mesh, "orders", "get", new_id())
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("shopctl: NOT_FOUND")
    assert len(missing.stderr.strip().splitlines()) == 1


async def test_events_tail_prints_an_event_published_after_it_started(mesh: LocalMesh) -> None:
    nc = await nats.connect(nats_url(mesh))
    js = nc.jetstream()
    deadline = time.monotonic() + 30
    while True:  # Payment makes its stream once it is connected
        try:
            before = {c.name for c in await js.consumers_info("PAYMENTS")}
            break
        except nats.js.errors.NotFoundError:
            assert time.monotonic() < deadline, "no stream PAYMENTS"
            await asyncio.sleep(0.2)
    command = [str(SHOPCTL), *flags(mesh), "--json", "events", "tail", "payments.>", "--count=1"]
    tail = await asyncio.to_thread(
        subprocess.Popen, command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # Started: its (ephemeral, ordered) consumer is on the stream.
        deadline = time.monotonic() + 30
        while {c.name for c in await js.consumers_info("PAYMENTS")} <= before:
            assert time.monotonic() < deadline, "events tail never subscribed"
            await asyncio.sleep(0.1)
        event = new_event(
            payment_events.RefundRequested,
            refund_id=new_id(),
            payment_id=new_id(),
            order_id=new_id(),
            customer_id=new_id(),
            amount=money_pb2.Money(currency_code="USD", minor_units=100),
        )
        env = envelope(event, "/shop/test")
        await js.publish(env.subject, env.payload, headers=env.headers)
        try:
            stdout, stderr = await asyncio.to_thread(tail.communicate, timeout=30)
        except subprocess.TimeoutExpired:
            tail.kill()
            stdout, stderr = tail.communicate()
            raise AssertionError(f"events tail printed nothing: {stdout!r} {stderr!r}") from None
    finally:
        tail.kill()
        await nc.close()
    assert tail.returncode == 0, stderr
    [record] = [json.loads(line) for line in stdout.splitlines()]
    assert record["event"]["refund_id"] == event.refund_id
    assert record["type"] == "shop.payment.v1.RefundRequested"


async def test_dead_letters_list_show_replay_and_discard(mesh: LocalMesh) -> None:
    # A PaymentSucceeded on payments.failed, a subject Order and Credit consume: both
    # dead-letter it at once. (Its body decodes as its ce-type says: other tests of this
    # session read the shared stream.)
    env = envelope(
        new_event(
            payment_events.PaymentSucceeded,
            payment_id=new_id(),
            order_id=new_id(),
            customer_id=new_id(),
            amount=money_pb2.Money(currency_code="USD", minor_units=100),
        ),
        "/shop/test",
    )
    nc = await nats.connect(nats_url(mesh))
    await nc.jetstream().publish("payments.failed", env.payload, headers=env.headers)
    await nc.close()

    mine: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while len(mine) < 2 and time.monotonic() < deadline:
        listed = await asyncio.to_thread(shopctl, mesh, "deadletters", "list", json_out=True)
        assert listed.returncode == 0, listed.stderr
        mine = [r for r in lines(listed) if r["event_id"] == env.event_id]
        await asyncio.sleep(0.5)
    assert {r["consumer"] for r in mine} == {"order-payments", "credit-payments"}
    assert all(r["subject"] == "payments.failed" and r["deliveries"] == 1 for r in mine)
    human = await asyncio.to_thread(shopctl, mesh, "deadletters", "list")
    assert "order-payments" in human.stdout
    assert "ce-type" in human.stdout

    seq = mine[0]["seq"]
    shown = await asyncio.to_thread(shopctl, mesh, "deadletters", "show", str(seq))
    assert shown.returncode == 0
    assert "shop-dead-reason" in shown.stdout
    [record] = lines(
        await asyncio.to_thread(shopctl, mesh, "deadletters", "show", str(seq), json_out=True)
    )
    assert record["headers"]["ce-id"] == env.event_id

    # With its original id, JetStream drops the replay (still in the duplicate window).
    again = await asyncio.to_thread(shopctl, mesh, "deadletters", "replay", str(seq))
    assert again.returncode == 1
    assert "--new-id" in again.stdout

    # Discard asks first; --yes does not.
    refused = await asyncio.to_thread(
        subprocess.run,
        [str(SHOPCTL), *flags(mesh), "deadletters", "discard", str(seq)],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1
    gone = await asyncio.to_thread(shopctl, mesh, "deadletters", "discard", str(seq), "--yes")
    assert gone.returncode == 0, gone.stderr
    missing = await asyncio.to_thread(shopctl, mesh, "deadletters", "show", str(seq))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"shopctl: no dead letter {seq}"

    # Replayed with a new id, it reaches its consumers again: still poison (nothing was
    # fixed), so both dead-letter it again, and the replayed dead letter is gone.
    [kept] = [str(r["seq"]) for r in mine if str(r["seq"]) != str(seq)]
    replayed = await asyncio.to_thread(
        shopctl, mesh, "deadletters", "replay", kept, "--new-id", json_out=True
    )
    assert replayed.returncode == 0, replayed.stderr
    [record] = lines(replayed)
    assert record["subject"] == "payments.failed"
    assert record["duplicate"] is False
    again_dead: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while len(again_dead) < 2 and time.monotonic() < deadline:
        listed = await asyncio.to_thread(shopctl, mesh, "deadletters", "list", json_out=True)
        again_dead = [r for r in lines(listed) if r["event_id"] == env.event_id]
        await asyncio.sleep(0.5)
    assert {r["consumer"] for r in again_dead} == {"order-payments", "credit-payments"}
    assert str(kept) not in {str(r["seq"]) for r in again_dead}
    cleanup = [str(r["seq"]) for r in again_dead]
    gone = await asyncio.to_thread(shopctl, mesh, "deadletters", "discard", *cleanup, "--yes")
    assert gone.returncode == 0, gone.stderr


async def test_a_bad_flag_or_an_unreachable_service_is_one_clear_line(mesh: LocalMesh) -> None:
    missing = await asyncio.to_thread(shopctl, mesh, "orders", "get")
    unknown = await asyncio.to_thread(shopctl, mesh, "--bogus", "status")
    for bad, says in ((missing, "Missing argument 'order_id'"), (unknown, "--bogus")):
        assert bad.returncode == 2
        assert bad.stderr.startswith("shopctl: "), bad.stderr
        assert says in bad.stderr, bad.stderr
        assert len(bad.stderr.splitlines()) == 1, bad.stderr
    down = await asyncio.to_thread(
        subprocess.run,
        [str(SHOPCTL), "--order=127.0.0.1:1", "--timeout=2", "orders", "get", new_id()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1
    assert down.stderr.startswith("shopctl: UNAVAILABLE")
    assert len(down.stderr.splitlines()) == 1
    no_nats = await asyncio.to_thread(
        subprocess.run,
        [str(SHOPCTL), "--nats=nats://127.0.0.1:1", "--timeout=1", "deadletters", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_nats.returncode == 1
    assert no_nats.stderr.startswith("shopctl: NATS at")
    assert len(no_nats.stderr.splitlines()) == 1


async def test_the_rpc_commands_tell_a_whole_story(mesh: LocalMesh) -> None:
    """Top up, order, watch it reserve, pay, refund, list; and a cancel: human and JSON."""

    async def ok(*args: str, json_out: bool = True) -> list[dict[str, Any]]:
        result = await asyncio.to_thread(shopctl, mesh, *args, json_out=json_out)
        assert result.returncode == 0, (args, result.stderr)
        return lines(result) if json_out else [{"stdout": result.stdout}]

    customer = new_id()
    [account] = await ok("credits", "top-up", customer, "--amount=100.00")
    assert account["customer_id"] == customer
    [human] = await ok("credits", "show", customer, json_out=False)
    assert "100.00 USD" in human["stdout"]

    [order] = await ok("orders", "create", customer, "book:2:12.50")
    assert order["total"] == {"currency_code": "USD", "minor_units": "2500"}
    reserved: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        [current] = await ok("orders", "get", order["order_id"])
        if current["status"] == "ORDER_STATUS_RESERVED":
            reserved.append(current)
            break
        await asyncio.sleep(0.2)
    assert reserved, "the order was never reserved"
    [paid] = await ok("payments", "pay", order["order_id"])
    assert paid["success"] is True
    payment_id = paid["payment"]["payment_id"]
    [got] = await ok("payments", "get", payment_id)
    assert got["order_id"] == order["order_id"]
    [refunded] = await ok("payments", "refund", payment_id, "--amount=5.00")
    assert refunded["payment"]["refunded_amount"]["minor_units"] == "500"
    listed = await ok("payments", "list", f"--customer={customer}")
    assert [p["payment_id"] for p in listed] == [payment_id]
    [human] = await ok("payments", "list", f"--order={order['order_id']}", json_out=False)
    assert payment_id in human["stdout"]
    assert "5.00 USD" in human["stdout"]

    [second] = await ok("orders", "create", customer, "pen:1:3.00")
    [cancelled] = await ok("orders", "cancel", second["order_id"])
    assert cancelled["status"] == "ORDER_STATUS_CANCELLED"
    changes = await ok("orders", "watch", second["order_id"])
    assert changes[-1]["status"] == "ORDER_STATUS_CANCELLED"
    mine = await ok("orders", "list", customer)
    assert {o["order_id"] for o in mine} == {order["order_id"], second["order_id"]}

    bad = await asyncio.to_thread(shopctl, mesh, "credits", "top-up", customer, "--amount=1.001")
    assert bad.returncode == 2
    assert "too many decimals" in bad.stderr


async def test_orders_watch_follows_the_order_as_it_changes(mesh: LocalMesh, shop: Shop) -> None:
    """`orders watch` prints the order, then each change of status as it comes (the stream),
    and ends by itself at a final one."""
    customer = shop.new_customer()
    await shop.top_up(customer, 10_000)
    order = await shop.reserved_order(customer, 300)
    watch = await asyncio.create_subprocess_exec(
        str(SHOPCTL), *flags(mesh), "--json", "orders", "watch", order.order_id,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert watch.stdout is not None
    first = json.loads(await asyncio.wait_for(watch.stdout.readline(), timeout=30))
    assert first["status"] == "ORDER_STATUS_RESERVED", first
    cancelled = await asyncio.to_thread(shopctl, mesh, "orders", "cancel", order.order_id)
    assert cancelled.returncode == 0, cancelled.stderr
    rest, errors = await asyncio.wait_for(watch.communicate(), timeout=30)
    assert watch.returncode == 0, errors
    assert [json.loads(line)["status"] for line in rest.decode().splitlines()] == [
        "ORDER_STATUS_CANCELLED"
    ]
