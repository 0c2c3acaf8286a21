"""Payments and refunds in PostgreSQL (schema `payments`).

State changes that race are conditional (`… WHERE status = 'PENDING'`): whoever records a
settlement first wins, and the loser reads the winner's outcome instead of writing its own.
"""

from __future__ import annotations

import asyncpg

from services.common.money import Money
from services.common.paging import Keyset, PageCursor
from services.common.sql import Record, Sql
from services.payment.domain.model import (
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from services.payment.service_layer.ports import RequestIdTaken

_PAYMENT_COLUMNS = (
    "payment_id, order_id, customer_id, reservation_id, currency, amount, payment_method,"
    " status, error_code, error_message, failure_reason, transaction_id, is_simulated,"
    " simulated_response, refunded, created_at, processed_at"
)
_REFUND_COLUMNS = (
    "refund_id, payment_id, currency, amount, reason, status, transaction_id, error_code,"
    " error_message, request_id, request_fingerprint, created_at, processed_at"
)


def _payment(row: Record) -> Payment:
    r = row
    return Payment(
        payment_id=str(r["payment_id"]),
        order_id=str(r["order_id"]),
        customer_id=str(r["customer_id"]),
        reservation_id=str(r["reservation_id"] or ""),
        amount=Money(r["currency"], r["amount"]),
        method=PaymentMethod(r["payment_method"]),
        status=PaymentStatus(r["status"]),
        error_code=r["error_code"] or "",
        error_message=r["error_message"] or "",
        failure_reason=r["failure_reason"] or "",
        transaction_id=r["transaction_id"] or "",
        is_simulated=r["is_simulated"],
        simulated_response=r["simulated_response"] or "",
        refunded=r["refunded"],
        created_at=r["created_at"],
        processed_at=r["processed_at"],
    )


def _refund(row: Record) -> Refund:
    r = row
    return Refund(
        refund_id=str(r["refund_id"]),
        payment_id=str(r["payment_id"]),
        amount=Money(r["currency"], r["amount"]),
        reason=r["reason"],
        request_id=str(r["request_id"]),
        status=RefundStatus(r["status"]),
        transaction_id=r["transaction_id"] or "",
        error_code=r["error_code"] or "",
        error_message=r["error_message"] or "",
        created_at=r["created_at"],
        processed_at=r["processed_at"],
    )


async def _stale_pending(
    conn: Sql, table: str, columns: str, older_than_seconds: float, limit: int
) -> list[Record]:
    """PENDING rows older than the given age, oldest first: what a crash may have left for
    recovery to settle (payments and refunds alike)."""
    return await conn.fetch(
        (
            f"SELECT {columns} FROM {table} WHERE status = 'PENDING'"
            " AND created_at < now() - make_interval(secs => :age)"
            " ORDER BY created_at LIMIT :limit"
        ),
        {"age": older_than_seconds, "limit": limit},
    )


class PaymentRepository:
    def __init__(self, conn: Sql) -> None:
        self.conn = conn

    async def add(self, payment: Payment) -> Payment | None:
        """Insert a PENDING payment; None when the order already has one (the database's
        unique constraint decides, so concurrent callers cannot both win)."""
        row = await self.conn.fetchrow(
            (
                "INSERT INTO payments (payment_id, order_id, customer_id, reservation_id,"
                " currency, amount, payment_method, status)"
                " VALUES (:payment_id, :order_id, :customer_id, :reservation_id,"
                " :currency, :amount, :method, 'PENDING')"
                f" ON CONFLICT (order_id) DO NOTHING RETURNING {_PAYMENT_COLUMNS}"
            ),
            {
                "payment_id": payment.payment_id,
                "order_id": payment.order_id,
                "customer_id": payment.customer_id,
                "reservation_id": payment.reservation_id or None,
                "currency": payment.amount.currency,
                "amount": payment.amount.minor_units,
                "method": payment.method.value,
            },
        )
        return _payment(row) if row is not None else None

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        row = await self.conn.row_by(
            "payments", _PAYMENT_COLUMNS, "payment_id", payment_id, for_update=for_update
        )
        return _payment(row) if row is not None else None

    async def for_order(self, order_id: str, *, for_update: bool = False) -> Payment | None:
        row = await self.conn.row_by(
            "payments", _PAYMENT_COLUMNS, "order_id", order_id, for_update=for_update
        )
        return _payment(row) if row is not None else None

    async def record_settlement(self, payment: Payment) -> Payment | None:
        """PENDING → the payment's new status; None if someone else settled it first."""
        row = await self.conn.fetchrow(
            (
                "UPDATE payments SET status = :status, error_code = :error_code,"
                " error_message = :error_message, failure_reason = :failure_reason,"
                " transaction_id = :transaction_id, is_simulated = :is_simulated,"
                " simulated_response = :simulated_response,"
                " processed_at = :processed_at, updated_at = now()"
                " WHERE payment_id = :payment_id AND status = 'PENDING'"
                f" RETURNING {_PAYMENT_COLUMNS}"
            ),
            {
                "payment_id": payment.payment_id,
                "status": payment.status.value,
                "error_code": payment.error_code or None,
                "error_message": payment.error_message or None,
                "failure_reason": payment.failure_reason or None,
                "transaction_id": payment.transaction_id or None,
                "is_simulated": payment.is_simulated,
                "simulated_response": payment.simulated_response or None,
                "processed_at": payment.processed_at,
            },
        )
        return _payment(row) if row is not None else None

    async def record_refunded(self, payment: Payment) -> Payment:
        """Write the refunded total and status; the caller holds the row lock."""
        row = await self.conn.update_row(
            "payments",
            _PAYMENT_COLUMNS,
            "payment_id",
            payment.payment_id,
            {"status": payment.status.value, "refunded": payment.refunded},
        )
        return _payment(row)

    async def page(
        self, order_id: str | None, customer_id: str | None, after: PageCursor | None, limit: int
    ) -> list[Payment]:
        page = Keyset("payment_id", after)
        where = [page.condition]
        if order_id:
            where.append("order_id = :order_id")
        if customer_id:
            where.append("customer_id = :customer_id")
        rows = await self.conn.fetch(
            (
                f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE {' AND '.join(where)}"
                f" ORDER BY {page.order_by} LIMIT :limit"
            ),
            {"order_id": order_id, "customer_id": customer_id, "limit": limit, **page.params},
        )
        return [_payment(row) for row in rows]

    async def stale_pending(self, older_than_seconds: float, limit: int) -> list[Payment]:
        rows = await _stale_pending(
            self.conn, "payments", _PAYMENT_COLUMNS, older_than_seconds, limit
        )
        return [_payment(row) for row in rows]


class RefundRepository:
    def __init__(self, conn: Sql) -> None:
        self.conn = conn

    async def add(self, refund: Refund, fingerprint: bytes) -> Refund:
        """Insert a PENDING refund. RequestIdTaken when a concurrent call recorded one with this
        request_id first: the unique constraint (not deferred) refuses this INSERT once that
        call commits, and this transaction is aborted."""
        try:
            row = await self.conn.fetchone(
                (
                    "INSERT INTO refunds (refund_id, payment_id, currency, amount, reason,"
                    " status, request_id, request_fingerprint)"
                    " VALUES (:refund_id, :payment_id, :currency, :amount, :reason, 'PENDING',"
                    f" :request_id, :fingerprint) RETURNING {_REFUND_COLUMNS}"
                ),
                {
                    "refund_id": refund.refund_id,
                    "payment_id": refund.payment_id,
                    "currency": refund.amount.currency,
                    "amount": refund.amount.minor_units,
                    "reason": refund.reason,
                    "request_id": refund.request_id,
                    "fingerprint": fingerprint,
                },
            )
        except asyncpg.UniqueViolationError as error:
            if error.constraint_name == "refunds_request_id_unique":
                raise RequestIdTaken(refund.request_id) from error
            raise
        return _refund(row)

    async def by_request_id(self, request_id: str) -> tuple[Refund, bytes] | None:
        row = await self.conn.row_by("refunds", _REFUND_COLUMNS, "request_id", request_id)
        if row is None:
            return None
        return _refund(row), bytes(row["request_fingerprint"])

    async def get(self, refund_id: str) -> Refund | None:
        row = await self.conn.row_by("refunds", _REFUND_COLUMNS, "refund_id", refund_id)
        return _refund(row) if row is not None else None

    async def pending_total(self, payment_id: str) -> int:
        """Minor units promised to refunds still at the gateway: not refundable again."""
        total = await self.conn.fetchval(
            (
                "SELECT coalesce(sum(amount), 0) FROM refunds"
                " WHERE payment_id = :id AND status = 'PENDING'"
            ),
            {"id": payment_id},
        )
        return int(total)

    async def record_settlement(self, refund: Refund) -> Refund | None:
        """PENDING → SUCCEEDED/FAILED; None if someone else settled it first."""
        row = await self.conn.fetchrow(
            (
                "UPDATE refunds SET status = :status, transaction_id = :transaction_id,"
                " error_code = :error_code, error_message = :error_message,"
                " processed_at = now()"
                " WHERE refund_id = :refund_id AND status = 'PENDING'"
                f" RETURNING {_REFUND_COLUMNS}"
            ),
            {
                "refund_id": refund.refund_id,
                "status": refund.status.value,
                "transaction_id": refund.transaction_id or None,
                "error_code": refund.error_code or None,
                "error_message": refund.error_message or None,
            },
        )
        return _refund(row) if row is not None else None

    async def stale_pending(self, older_than_seconds: float, limit: int) -> list[Refund]:
        rows = await _stale_pending(
            self.conn, "refunds", _REFUND_COLUMNS, older_than_seconds, limit
        )
        return [_refund(row) for row in rows]


class CancelledOrderRepository:
    """Orders seen cancelled (`orders.cancelled`), for the compensation job: noted, checked
    with Order, and resolved with the refund they led to, if any."""

    def __init__(self, conn: Sql) -> None:
        self.conn = conn

    async def note(self, order_id: str, reason: str) -> None:
        """Remember the order (an effect-free insert: a repeat changes nothing)."""
        await self.conn.execute(
            (
                "INSERT INTO cancelled_orders (order_id, reason) VALUES (:order_id, :reason)"
                " ON CONFLICT (order_id) DO NOTHING"
            ),
            {"order_id": order_id, "reason": reason[:1000]},
        )

    async def to_check(self, limit: int) -> list[str]:
        """Open notes whose payment went through: the only ones that may need a refund (one
        whose payment is still PENDING shows up once it settles)."""
        rows = await self.conn.fetch(
            (
                "SELECT c.order_id FROM cancelled_orders c"
                " JOIN payments p ON p.order_id = c.order_id"
                " WHERE c.resolved_at IS NULL AND p.status IN ('SUCCEEDED', 'PARTIALLY_REFUNDED')"
                " ORDER BY c.noted_at LIMIT :limit"
            ),
            {"limit": limit},
        )
        return [str(row["order_id"]) for row in rows]

    async def resolve_nothing_charged(self, after_seconds: float) -> None:
        """Close the notes older than `after_seconds` that no payment can still appear for."""
        await self.conn.execute(
            (
                "UPDATE cancelled_orders c SET resolved_at = now(), outcome = 'NOTHING_CHARGED'"
                " WHERE c.resolved_at IS NULL"
                " AND c.noted_at < now() - make_interval(secs => :after)"
                " AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.order_id = c.order_id"
                " AND p.status IN ('PENDING', 'SUCCEEDED', 'PARTIALLY_REFUNDED'))"
            ),
            {"after": after_seconds},
        )

    async def refund_of(self, order_id: str) -> str | None:
        """The compensating refund recorded for the order, if any."""
        refund_id = await self.conn.fetchval(
            "SELECT refund_id FROM cancelled_orders WHERE order_id = :order_id",
            {"order_id": order_id},
        )
        return str(refund_id) if refund_id is not None else None

    async def mark_compensated(self, order_id: str, refund_id: str) -> None:
        await self.conn.execute(
            (
                "UPDATE cancelled_orders SET refund_id = :refund_id"
                " WHERE order_id = :order_id AND refund_id IS NULL"
            ),
            {"order_id": order_id, "refund_id": refund_id},
        )

    async def resolve(self, order_id: str, outcome: str) -> None:
        await self.conn.execute(
            (
                "UPDATE cancelled_orders SET resolved_at = now(), outcome = :outcome"
                " WHERE order_id = :order_id AND resolved_at IS NULL"
            ),
            {"order_id": order_id, "outcome": outcome},
        )
