"""The issue's invariants, read straight from the services' PostgreSQL schemas (orders,
credits, payments) and from JetStream, after every scenario.

`settle_and_check` polls until the mesh is quiet (outbox sent, consumers drained) and every
invariant holds, or fails with the last violation found: the saga is asynchronous, so a
check right after a fault would only see it half-way.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping

import asyncpg
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.common.events import EVENT_TYPES, STREAMS

# durable consumer → the schema of the service that owns its inbox
CONSUMERS = {
    "order-credits": ("CREDITS", "orders"),
    "order-payments": ("PAYMENTS", "orders"),
    "credit-orders": ("ORDERS", "credits"),
    "credit-payments": ("PAYMENTS", "credits"),
}
SCHEMAS = ("orders", "credits", "payments")
SUCCESSFUL = ("SUCCEEDED", "PARTIALLY_REFUNDED", "REFUNDED")


class Violation(AssertionError):
    pass


def _check(cond: bool, what: str, problems: list[str]) -> int:
    if not cond:
        problems.append(what)
    return 1


async def check_once(
    database_url: str, nats_url: str, topped_up: Mapping[str, int]
) -> tuple[int, list[str]]:
    """One pass over every invariant: (number of checks made, violations)."""
    problems: list[str] = []
    checks = 0
    conn = await asyncpg.connect(database_url)
    try:
        # 1. the outbox is empty of unsent rows
        for schema in SCHEMAS:
            unsent = await conn.fetchval(
                f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL"
            )
            checks += _check(unsent == 0, f"{schema}.outbox has {unsent} unsent rows", problems)

        # 2. each outbox event is in its stream exactly once, and consumed by each consumer
        stream_ids = await _stream_msg_ids(nats_url)
        for schema in SCHEMAS:
            rows = await conn.fetch(f"SELECT event_id::text AS id, subject FROM {schema}.outbox")
            for row in rows:
                stream = _stream_of(row["subject"])
                n = stream_ids[stream][row["id"]]
                checks += _check(
                    n == 1, f"event {row['id']} ({row['subject']}) in stream {n} times", problems
                )
        filters = await _consumer_filters(nats_url, problems)
        checks += len(CONSUMERS)
        for consumer, (_stream, inbox_schema) in CONSUMERS.items():
            applied = {
                r["id"]
                for r in await conn.fetch(
                    f"SELECT event_id::text AS id FROM {inbox_schema}.inbox WHERE consumer = $1",
                    consumer,
                )
            }
            for schema in SCHEMAS:
                rows = await conn.fetch(
                    f"SELECT event_id::text AS id, subject FROM {schema}.outbox"
                    " WHERE subject = ANY($1::text[])",
                    filters.get(consumer, []),
                )
                for row in rows:
                    checks += _check(
                        row["id"] in applied,
                        f"{consumer} never applied {row['subject']} {row['id']}",
                        problems,
                    )

        # 3. money is conserved per customer, nothing negative
        accounts = await conn.fetch("SELECT * FROM credits.accounts")
        holds = await conn.fetch("SELECT * FROM credits.reservations")
        payments = await conn.fetch("SELECT * FROM payments.payments")
        refunds = await conn.fetch("SELECT * FROM payments.refunds")
        orders = await conn.fetch("SELECT * FROM orders.orders")
        # Credit's side of the refunds: what each payment's refunds gave back, and the
        # payments that won at the gateway too late to capture anything (nothing to give back)
        given_back: Counter[str] = Counter()
        for row in await conn.fetch("SELECT payment_id, given_back FROM credits.applied_refunds"):
            given_back[str(row["payment_id"])] += row["given_back"]
        captured_nothing = {
            str(row["payment_id"])
            for row in await conn.fetch(
                "SELECT payment_id FROM credits.reconciliation WHERE kind = 'LATE_CAPTURE_SHORT'"
            )
        }
        for a in accounts:
            customer = str(a["customer_id"])
            parts = (a["available"], a["reserved"], a["spent"])
            checks += _check(min(parts) >= 0, f"negative balance {dict(a)}", problems)
            checks += _check(
                sum(parts) == a["topped_up"], f"money not conserved {dict(a)}", problems
            )
            mine = [h for h in holds if str(h["customer_id"]) == customer]
            active = sum(h["amount"] for h in mine if h["state"] == "ACTIVE")
            kept = sum(h["amount"] - h["refunded"] for h in mine if h["state"] == "CAPTURED")
            checks += _check(
                a["reserved"] == active,
                f"{customer}: reserved {a['reserved']} != {active}",
                problems,
            )
            checks += _check(
                a["spent"] == kept,
                f"{customer}: spent {a['spent']} != captured minus given back {kept}",
                problems,
            )
            if customer in topped_up:
                checks += _check(
                    a["topped_up"] == topped_up[customer],
                    f"{customer}: topped up {a['topped_up']}, clients added {topped_up[customer]}",
                    problems,
                )

        # 4. at most one successful payment / capture per order; refunds within the payment
        per_order = Counter(str(p["order_id"]) for p in payments if p["status"] in SUCCESSFUL)
        checks += _check(
            all(n == 1 for n in per_order.values()), f"orders paid twice: {per_order}", problems
        )
        captures = Counter(str(h["order_id"]) for h in holds if h["state"] == "CAPTURED")
        checks += _check(
            all(n == 1 for n in captures.values()), f"orders captured twice: {captures}", problems
        )
        refunded: Counter[str] = Counter()
        for refund in refunds:
            if refund["status"] == "SUCCEEDED":
                refunded[str(refund["payment_id"])] += refund["amount"]
        for p in payments:
            pid = str(p["payment_id"])
            checks += _check(
                refunded[pid] == p["refunded"] <= p["amount"],
                f"payment {pid}: refunds {refunded[pid]}, refunded {p['refunded']},"
                f" amount {p['amount']}",
                problems,
            )
            checks += _check(p["status"] != "PENDING", f"payment {pid} still PENDING", problems)
            # Credit gives back exactly what Payment refunded, never credits it never took
            owed = 0 if pid in captured_nothing else refunded[pid]
            checks += _check(
                given_back[pid] == owed,
                f"payment {pid}: Credit gave back {given_back[pid]}, owed {owed}"
                f" (refunded {refunded[pid]})",
                problems,
            )
            if pid in captured_nothing:
                checks += _check(
                    p["status"] == "REFUNDED",
                    f"payment {pid} captured nothing but is {p['status']}, not refunded",
                    problems,
                )

        # a hold is released once and captured once, whoever sweeps (replicas race)
        effects: Counter[tuple[str, str]] = Counter()
        for row in await conn.fetch(
            "SELECT subject, event_type, payload FROM credits.outbox"
            " WHERE subject IN ('credits.released', 'credits.captured')"
        ):
            event = EVENT_TYPES[row["event_type"]].FromString(row["payload"])
            effects[(row["subject"], event.reservation_id)] += 1  # type: ignore[attr-defined]
        twice = {key: n for key, n in effects.items() if n > 1}
        checks += _check(not twice, f"holds released or captured twice: {twice}", problems)

        # 5. every order's final state agrees with its payment and hold
        hold_of = {str(h["order_id"]): h for h in holds}
        paid_of = {str(p["order_id"]): p for p in payments if p["status"] in SUCCESSFUL}
        for o in orders:
            oid, status = str(o["order_id"]), o["status"]
            hold, paid = hold_of.get(oid), paid_of.get(oid)
            checks += _check(status != "PENDING", f"order {oid} still PENDING", problems)
            if status in ("PAID", "REFUNDED"):
                checks += _check(
                    hold is not None and hold["state"] == "CAPTURED",
                    f"order {oid} {status} but hold {hold and hold['state']}",
                    problems,
                )
                checks += _check(
                    paid is not None and str(paid["payment_id"]) == str(o["payment_id"]),
                    f"order {oid} {status} without its successful payment",
                    problems,
                )
            if status == "REFUNDED":
                checks += _check(
                    paid is not None and paid["status"] == "REFUNDED",
                    f"order {oid} REFUNDED but payment {paid and paid['status']}",
                    problems,
                )
            if status == "CANCELLED" and paid is not None:
                # A payment that beat the cancel is given back by Payment's compensation.
                checks += _check(
                    paid["status"] == "REFUNDED",
                    f"order {oid} CANCELLED but its payment is {paid['status']}, not refunded",
                    problems,
                )
            if status in ("CANCELLED", "PAYMENT_FAILED", "REJECTED"):
                checks += _check(
                    hold is None or hold["state"] != "ACTIVE",
                    f"order {oid} {status} still holds credits",
                    problems,
                )
            if status == "RESERVED":
                checks += _check(
                    hold is not None and hold["state"] == "ACTIVE",
                    f"order {oid} RESERVED, hold {hold and hold['state']}",
                    problems,
                )
        for oid, p in paid_of.items():
            hold = hold_of.get(oid)
            checks += _check(
                str(p["payment_id"]) in captured_nothing  # checked above: refunded, nothing back
                or (
                    hold is not None
                    and hold["state"] == "CAPTURED"
                    and str(hold["payment_id"]) == str(p["payment_id"])
                ),
                f"payment {p['payment_id']} succeeded but hold is {hold and hold['state']}",
                problems,
            )
        for h in holds:
            if h["state"] == "CAPTURED":
                checks += _check(
                    str(h["order_id"]) in paid_of,
                    f"hold {h['reservation_id']} CAPTURED without a successful payment",
                    problems,
                )
    finally:
        await conn.close()
    return checks, problems


def _stream_of(subject: str) -> str:
    prefix = subject.split(".", 1)[0] + ".>"
    return next(name for name, pattern in STREAMS.items() if pattern == prefix)


async def _stream_msg_ids(nats_url: str) -> dict[str, Counter[str]]:
    """How many times each Nats-Msg-Id is stored in each stream."""
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=2)
    try:
        js = nc.jetstream(timeout=10)
        found: dict[str, Counter[str]] = {}
        for stream in STREAMS:
            ids: Counter[str] = Counter()
            info = await js.stream_info(stream)
            total = info.state.messages
            if total:
                sub = await js.pull_subscribe("", stream=stream, config=_ephemeral_config())
                got = 0
                while got < total:
                    msgs = await sub.fetch(min(500, total - got), timeout=10)
                    for msg in msgs:
                        ids[(msg.headers or {}).get("Nats-Msg-Id", "")] += 1
                    got += len(msgs)
                await sub.unsubscribe()
            found[stream] = ids
        return found
    finally:
        await nc.close()


def _ephemeral_config() -> ConsumerConfig:
    return ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.ALL,
        inactive_threshold=30,
    )


async def _consumer_filters(nats_url: str, problems: list[str]) -> dict[str, list[str]]:
    """Each durable's subjects; also a violation if one has undelivered or unacked events."""
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=2)
    try:
        js = nc.jetstream(timeout=10)
        filters: dict[str, list[str]] = {}
        for durable, (stream, _schema) in CONSUMERS.items():
            info = await js.consumer_info(stream, durable)
            filters[durable] = list(info.config.filter_subjects or [info.config.filter_subject])
            if info.num_pending or info.num_ack_pending:
                problems.append(
                    f"{durable}: {info.num_pending} pending, {info.num_ack_pending} unacked"
                )
        return filters
    finally:
        await nc.close()


async def settle_and_check(
    database_url: str, nats_url: str, topped_up: Mapping[str, int], timeout: float = 120.0
) -> int:
    """Poll until every invariant holds; returns the number of checks in the passing run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            checks, problems = await check_once(database_url, nats_url, topped_up)
        except (OSError, asyncpg.PostgresError, nats.errors.Error, TimeoutError) as error:
            checks, problems = 0, [f"cannot read the state yet: {error!r}"]
        if not problems:
            return checks
        if time.monotonic() > deadline:
            shown = "\n  ".join(problems[:30])
            raise Violation(f"{len(problems)} invariant violations after {timeout}s:\n  {shown}")
        await asyncio.sleep(0.5)
