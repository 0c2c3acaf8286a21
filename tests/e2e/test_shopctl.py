"""The real `shopctl` (the console script) as a subprocess against the running mesh: exit
statuses, human and `--json` output; a paid-then-refunded order's timeline in causal order;
`events tail` prints an event published after it started; dead letters listed, shown,
replayed and discarded; a bad flag or an unreachable service: one clear line, non-zero."""

from __future__ import annotations

import asyncio
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
from shop.order.v1 import order_pb2
from shop.payment.v1 import events_pb2 as payment_events
from tests.e2e.shop import Shop, new_id

pytestmark = pytest.mark.e2e

SHOPCTL = Path(sys.executable).parent / "shopctl"


def flags(mesh: LocalMesh) -> list[str]:
    s = mesh.services
    return [
        f"--order={s['order'].target}",
        f"--credit={s['credit'].target}",
        f"--payment={s['payment'].target}",
        f"--nats={mesh.nats_url}",
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
    health = {r["service"]: r["health"] for r in records if r["kind"] == "service"}
    assert health == {"order": "SERVING", "credit": "SERVING", "payment": "SERVING"}
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
    assert gaps[0] == 0 and all(g >= 0 for g in gaps)
    now = {r["kind"]: r[r["kind"]] for r in records if r["kind"] != "event"}
    assert now["order"]["status"] == "ORDER_STATUS_REFUNDED"
    assert now["payment"]["order_id"] == order.order_id
    assert now["hold"] is not None

    human = await asyncio.to_thread(shopctl, mesh, "orders", "timeline", order.order_id)
    assert human.returncode == 0
    assert "payments.refunded" in human.stdout
    assert "now: order" in human.stdout and "REFUNDED" in human.stdout


async def test_orders_get_human_json_and_not_found(mesh: LocalMesh, shop: Shop) -> None:
    order = await refunded_order(shop)
    human = await asyncio.to_thread(shopctl, mesh, "orders", "get", order.order_id)
    assert human.returncode == 0 and "REFUNDED" in human.stdout
    [record] = lines(
        await asyncio.to_thread(shopctl, mesh, "orders", "get", order.order_id, json_out=True)
    )
    assert record["order_id"] == order.order_id
    missing = await asyncio.to_thread(shopctl, mesh, "orders", "get", new_id())
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("shopctl: NOT_FOUND")
    assert len(missing.stderr.strip().splitlines()) == 1


async def test_events_tail_prints_an_event_published_after_it_started(mesh: LocalMesh) -> None:
    command = [str(SHOPCTL), *flags(mesh), "--json", "events", "tail", "payments.>", "--count=1"]
    tail = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        await asyncio.sleep(2.0)  # subscribed
        event = new_event(
            payment_events.RefundRequested,
            refund_id=new_id(),
            payment_id=new_id(),
            order_id=new_id(),
            customer_id=new_id(),
            amount=money_pb2.Money(currency_code="USD", minor_units=100),
        )
        env = envelope(event, "/shop/test")
        nc = await nats.connect(mesh.nats_url)
        await nc.jetstream().publish(env.subject, env.payload, headers=env.headers)
        await nc.close()
        stdout, stderr = await asyncio.to_thread(tail.communicate, timeout=30)
    finally:
        tail.kill()
    assert tail.returncode == 0, stderr
    [record] = [json.loads(line) for line in stdout.splitlines()]
    assert record["event"]["refund_id"] == event.refund_id
    assert record["type"] == "shop.payment.v1.RefundRequested"


async def test_dead_letters_list_show_replay_and_discard(mesh: LocalMesh) -> None:
    # A garbage body on a subject Order and Credit consume: both dead-letter it at once.
    env = envelope(
        new_event(
            payment_events.PaymentFailed,
            payment_id=new_id(),
            order_id=new_id(),
            customer_id=new_id(),
            amount=money_pb2.Money(currency_code="USD", minor_units=100),
        ),
        "/shop/test",
    )
    nc = await nats.connect(mesh.nats_url)
    await nc.jetstream().publish(env.subject, b"\xffgarbage", headers=env.headers)
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
    assert "order-payments" in human.stdout and "undecodable" in human.stdout

    seq = mine[0]["seq"]
    shown = await asyncio.to_thread(shopctl, mesh, "deadletters", "show", str(seq))
    assert shown.returncode == 0 and "shop-dead-reason" in shown.stdout
    [record] = lines(
        await asyncio.to_thread(shopctl, mesh, "deadletters", "show", str(seq), json_out=True)
    )
    assert record["headers"]["ce-id"] == env.event_id

    # With its original id, JetStream drops the replay (still in the duplicate window).
    again = await asyncio.to_thread(shopctl, mesh, "deadletters", "replay", str(seq))
    assert again.returncode == 1 and "--new-id" in again.stdout

    # Discard asks first; --yes does not.
    refused = subprocess.run(
        [str(SHOPCTL), *flags(mesh), "deadletters", "discard", str(seq)],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1
    both = [str(r["seq"]) for r in mine]
    gone = await asyncio.to_thread(shopctl, mesh, "deadletters", "discard", *both, "--yes")
    assert gone.returncode == 0, gone.stderr
    missing = await asyncio.to_thread(shopctl, mesh, "deadletters", "show", str(seq))
    assert missing.returncode == 1 and missing.stderr.strip() == f"shopctl: no dead letter {seq}"


async def test_a_bad_flag_or_an_unreachable_service_is_one_clear_line(mesh: LocalMesh) -> None:
    bad = await asyncio.to_thread(shopctl, mesh, "orders", "get")
    assert bad.returncode == 2
    down = subprocess.run(
        [str(SHOPCTL), "--order=127.0.0.1:1", "--timeout=2", "orders", "get", new_id()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1
    assert down.stderr.startswith("shopctl: UNAVAILABLE") and len(down.stderr.splitlines()) == 1
    no_nats = subprocess.run(
        [str(SHOPCTL), "--nats=nats://127.0.0.1:1", "--timeout=1", "deadletters", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_nats.returncode == 1
    assert no_nats.stderr.startswith("shopctl: NATS at") and len(no_nats.stderr.splitlines()) == 1
