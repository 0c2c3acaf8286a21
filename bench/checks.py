"""After a run: wait for the mesh to go quiet, then check the books and measure event lag,
straight from the services' schemas (read only)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg

SCHEMAS = ("orders", "credits", "payments")

_UNPUBLISHED = " + ".join(
    f"(SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL)" for schema in SCHEMAS
)
# A settled saga leaves three matching counts behind: a succeeded payment, a paid order and
# a captured hold.
_SETTLED = """
SELECT (SELECT count(*) FROM payments.payments WHERE status = 'SUCCEEDED'),
       (SELECT count(*) FROM orders.orders WHERE status = 'PAID'),
       (SELECT count(*) FROM credits.reservations WHERE state = 'CAPTURED'),
       (SELECT count(*) FROM orders.orders WHERE status = 'PENDING'),
       (SELECT count(*) FROM payments.payments WHERE status = 'PENDING')
"""

# Per delivery: the whole lag (outbox row → inbox row), and its two parts: the relay's
# (outbox row → published) and the consumer's (published → applied), with who consumed what.
_LAG = """
WITH produced AS (
    SELECT event_id, subject, created_at, published_at FROM orders.outbox
    UNION ALL SELECT event_id, subject, created_at, published_at FROM credits.outbox
    UNION ALL SELECT event_id, subject, created_at, published_at FROM payments.outbox
), consumed AS (
    SELECT consumer, event_id, processed_at FROM orders.inbox
    UNION ALL SELECT consumer, event_id, processed_at FROM credits.inbox
    UNION ALL SELECT consumer, event_id, processed_at FROM payments.inbox
)
SELECT extract(epoch FROM c.processed_at - p.created_at)::float8,
       extract(epoch FROM coalesce(p.published_at, c.processed_at) - p.created_at)::float8,
       extract(epoch FROM c.processed_at - coalesce(p.published_at, c.processed_at))::float8,
       c.consumer, p.subject
FROM produced p JOIN consumed c USING (event_id)
WHERE p.created_at >= to_timestamp($1) AND p.created_at < to_timestamp($2)
"""


@dataclass(frozen=True)
class Delivery:
    """One event applied by one consumer: its lag, and the relay's and consumer's parts."""

    lag: float
    relay: float
    apply: float
    consumer: str
    subject: str


_BOOKS = [
    (
        "conservation: topped_up = available + reserved + spent, nothing negative",
        """SELECT customer_id FROM credits.accounts
           WHERE topped_up <> available + reserved + spent
              OR least(available, reserved, spent) < 0""",
    ),
    (
        "reserved = the customer's active holds",
        """SELECT a.customer_id FROM credits.accounts a
           LEFT JOIN (SELECT customer_id, sum(amount) AS held FROM credits.reservations
                      WHERE state = 'ACTIVE' GROUP BY customer_id) r USING (customer_id)
           WHERE a.reserved <> coalesce(r.held, 0)""",
    ),
    (
        "spent = the customer's captured holds = the customer's succeeded payments",
        """SELECT a.customer_id FROM credits.accounts a
           LEFT JOIN (SELECT customer_id, sum(amount) AS captured FROM credits.reservations
                      WHERE state = 'CAPTURED' GROUP BY customer_id) r USING (customer_id)
           LEFT JOIN (SELECT customer_id, sum(amount) AS charged FROM payments.payments
                      WHERE status = 'SUCCEEDED' GROUP BY customer_id) p USING (customer_id)
           WHERE a.spent <> coalesce(r.captured, 0) OR a.spent <> coalesce(p.charged, 0)""",
    ),
    (
        "one charge per order: at most one payment, and a paid order has exactly one",
        """SELECT o.order_id FROM orders.orders o
           LEFT JOIN payments.payments p ON p.order_id = o.order_id
           GROUP BY o.order_id, o.status
           HAVING count(p.payment_id) > 1
               OR (o.status = 'PAID' AND count(*) FILTER (WHERE p.status = 'SUCCEEDED') <> 1)""",
    ),
    (
        "every succeeded payment's order is PAID and its hold CAPTURED",
        """SELECT p.payment_id FROM payments.payments p
           LEFT JOIN orders.orders o ON o.order_id = p.order_id
           LEFT JOIN credits.reservations r ON r.order_id = p.order_id
           WHERE p.status = 'SUCCEEDED'
             AND (o.status IS DISTINCT FROM 'PAID' OR r.state IS DISTINCT FROM 'CAPTURED')""",
    ),
]


@dataclass
class Books:
    ok: bool
    problems: list[str] = field(default_factory=list)
    quiet: bool = True
    counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, "quiet": self.quiet, **self.counts}


@contextlib.asynccontextmanager
async def _connected(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the bench's own (asyncpg's URL form), closed after the block."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        yield conn
    finally:
        await conn.close()


async def wait_quiet(database_url: str, patience: float = 60.0) -> bool:
    """Until every outbox is published and every succeeded payment has reached its order
    and its hold (the saga's tail is asynchronous); False if that did not happen in time."""
    async with _connected(database_url) as conn:
        deadline = time.monotonic() + patience
        while True:
            unpublished = await conn.fetchval(f"SELECT {_UNPUBLISHED}")
            paid, ordered, captured, pending_orders, pending_payments = await conn.fetchrow(
                _SETTLED
            )
            if (
                unpublished == 0
                and paid == ordered == captured
                and pending_orders == 0
                and pending_payments == 0
            ):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)


async def check_books(database_url: str, topped_up: dict[str, int]) -> Books:
    """Every invariant of the saga, over every customer, order and payment in the database;
    `topped_up` is what the benchmark itself put on each customer's account."""
    quiet = await wait_quiet(database_url)
    async with _connected(database_url) as conn:
        problems: list[str] = []
        if not quiet:
            problems.append("the mesh did not settle within 60 s after the run")
        for label, query in _BOOKS:
            bad = await conn.fetch(query)
            if bad:
                problems.append(f"{label}: {len(bad)} violations, e.g. {bad[0][0]}")
        accounts = {
            str(row["customer_id"]): int(row["topped_up"])
            for row in await conn.fetch("SELECT customer_id, topped_up FROM credits.accounts")
        }
        wrong = [c for c, amount in topped_up.items() if accounts.get(c) != amount]
        if wrong:
            problems.append(
                f"topped_up differs from what the benchmark added for {len(wrong)} customers"
            )
        row = await conn.fetchrow(_SETTLED)
        counts = {
            "payments_succeeded": int(row[0]),
            "orders_paid": int(row[1]),
            "holds_captured": int(row[2]),
            "orders": int(await conn.fetchval("SELECT count(*) FROM orders.orders")),
        }
        return Books(ok=not problems, problems=problems, quiet=quiet, counts=counts)


async def event_lags(database_url: str, start: float, end: float) -> list[Delivery]:
    """Seconds from each event's outbox row (producer transaction) to each consumer's inbox
    row (consumer transaction), for events produced in [start, end) (wall clock), with the
    part before publication and the part after it."""
    async with _connected(database_url) as conn:
        return [Delivery(*row) for row in await conn.fetch(_LAG, start, end)]


@dataclass(frozen=True, slots=True)
class StatementCount:
    """One statement's text (constants replaced by $n) and how often the services ran it."""

    query: str
    calls: int
    mean_ms: float


async def statements_reset(database_url: str) -> bool:
    """Start counting the services' statements afresh (pg_stat_statements); False if the
    server did not load the extension's library (shared_preload_libraries)."""
    try:
        async with _connected(database_url) as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.execute("SELECT pg_stat_statements_reset()")
    except asyncpg.PostgresError:
        return False
    return True


async def statements(database_url: str) -> list[StatementCount]:
    """The statements run since `statements_reset`, most called first (BEGIN and COMMIT
    count: each is a round trip). The bench's own are left out: only they name the services'
    schemas (the services' statements rely on their search_path)."""
    async with _connected(database_url) as conn:
        rows = await conn.fetch(
            "SELECT query, calls, mean_exec_time FROM pg_stat_statements"
            " WHERE query !~ '\\m(orders|credits|payments)\\.(outbox|orders|payments)\\M'"
            " AND query NOT LIKE '%pg_stat_statements%'"
            " ORDER BY calls DESC"
        )
        return [
            StatementCount(row["query"], int(row["calls"]), float(row["mean_exec_time"]))
            for row in rows
        ]


async def server_version(database_url: str) -> str:
    async with _connected(database_url) as conn:
        return str(await conn.fetchval("SHOW server_version"))
