"""Orders in PostgreSQL (schema `orders`). Reads for update take the row lock that
serializes every change of one order (a cancel racing a saga event, two events at once)."""

from __future__ import annotations

import json
from typing import Any

from services.common import metrics
from services.common.money import Money
from services.common.paging import Fetched, Keyset, PageCursor
from services.common.sql import Record, Sql
from services.order.domain.model import LineItem, Order, OrderStatus

# Items loaded at most for one page of ListOrders (about 1.5 MB at the longest SKUs): at
# least 20 orders of MAX_ITEMS, the rest of a page comes with the next token.
FETCH_MAX_ITEMS = 10_000

_COLUMNS = (
    "order_id, customer_id, currency, total, status, reservation_id, payment_id,"
    " failure_reason, items, created_at, updated_at"
)


def _items_to_json(order: Order) -> str:
    # The currency is the order's; each item keeps only its own numbers.
    return json.dumps(
        [
            {"sku": i.sku, "quantity": i.quantity, "unit_price": i.unit_price.minor_units}
            for i in order.items
        ]
    )


def _items_from_json(raw: Any, currency: str) -> tuple[LineItem, ...]:
    data = json.loads(raw) if isinstance(raw, str | bytes) else raw
    return tuple(
        LineItem(item["sku"], int(item["quantity"]), Money(currency, int(item["unit_price"])))
        for item in data
    )


def _from_row(r: Record) -> Order:
    currency = r["currency"]
    return Order(
        order_id=str(r["order_id"]),
        customer_id=str(r["customer_id"]),
        items=_items_from_json(r["items"], currency),
        total=Money(currency, r["total"]),
        status=OrderStatus(r["status"]),
        reservation_id=str(r["reservation_id"] or ""),
        payment_id=str(r["payment_id"] or ""),
        failure_reason=r["failure_reason"] or "",
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


class OrderRepository:
    def __init__(self, conn: Sql) -> None:
        self.conn = conn

    async def add(self, order: Order) -> Order:
        row = await self.conn.fetchone(
            (
                "INSERT INTO orders (order_id, customer_id, currency, total, status,"
                " reservation_id, payment_id, failure_reason, items)"
                " VALUES (:id, :customer, :currency, :total, :status, :reservation,"
                " :payment, :reason, CAST(:items AS jsonb))"
                f" RETURNING {_COLUMNS}"
            ),
            {
                "id": order.order_id,
                "customer": order.customer_id,
                "currency": order.total.currency,
                "total": order.total.minor_units,
                "status": order.status.value,
                "reservation": order.reservation_id or None,
                "payment": order.payment_id or None,
                "reason": order.failure_reason or None,
                "items": _items_to_json(order),
            },
        )
        metrics.count_after_commit(metrics.ORDERS, order.status.value)
        return _from_row(row)

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        row = await self.conn.row_by(
            "orders", _COLUMNS, "order_id", order_id, for_update=for_update
        )
        return _from_row(row) if row is not None else None

    async def save(self, order: Order) -> Order:
        """Write the lifecycle fields back (items and total never change)."""
        row = await self.conn.update_row(
            "orders",
            _COLUMNS,
            "order_id",
            order.order_id,
            {
                "status": order.status.value,
                "reservation_id": order.reservation_id or None,
                "payment_id": order.payment_id or None,
                "failure_reason": order.failure_reason or None,
            },
        )
        metrics.count_after_commit(metrics.ORDERS, order.status.value)
        return _from_row(row)

    async def list_for_customer(
        self, customer_id: str, after: PageCursor | None, limit: int
    ) -> Fetched[Order]:
        """Up to `limit` orders, newest first, stopping once FETCH_MAX_ITEMS items are loaded
        (the first order always comes): a page of big orders is never loaded whole."""
        page = Keyset("order_id", after)
        rows = await self.conn.fetch(
            (
                "WITH page AS ("
                " SELECT order_id, created_at, jsonb_array_length(items) AS n FROM orders"
                f" WHERE customer_id = :customer AND {page.condition}"
                f" ORDER BY {page.order_by} LIMIT :limit"
                "), counted AS ("
                " SELECT order_id, count(*) OVER () AS fetched,"
                f" sum(n) OVER (ORDER BY {page.order_by}) - n AS items_before"
                " FROM page"
                f") SELECT {_COLUMNS}, counted.fetched FROM orders JOIN counted USING (order_id)"
                " WHERE counted.items_before < :max_items"
                f" ORDER BY {page.order_by}"
            ),
            {
                "customer": customer_id,
                "limit": limit,
                "max_items": FETCH_MAX_ITEMS,
                **page.params,
            },
        )
        return Fetched(
            [_from_row(row) for row in rows],
            cut_short=bool(rows) and len(rows) < rows[0]["fetched"],
        )
