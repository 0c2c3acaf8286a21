"""Reservations in PostgreSQL (schema `credits`)."""

from __future__ import annotations

import uuid

from services.common import metrics
from services.common.money import Money
from services.common.paging import Keyset, PageCursor
from services.common.sql import Record, Sql
from services.credit.domain.reservation import Reservation, ReservationState
from services.credit.service_layer.ports import AppliedRefund, BeforeReserving, Discrepancy

_COLUMNS = (
    "reservation_id, customer_id, order_id, currency, amount, state, expires_at,"
    " payment_id, release_reason, refunded, created_at, updated_at"
)


def _from_row(r: Record) -> Reservation:
    return Reservation(
        reservation_id=str(r["reservation_id"]),
        customer_id=str(r["customer_id"]),
        order_id=str(r["order_id"]),
        amount=Money(r["currency"], r["amount"]),
        state=ReservationState(r["state"]),
        expires_at=r["expires_at"],
        payment_id=str(r["payment_id"] or ""),
        release_reason=r["release_reason"] or "",
        refunded=r["refunded"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


class ReservationRepository:
    def __init__(self, conn: Sql) -> None:
        self.conn = conn

    async def get(self, reservation_id: str) -> Reservation | None:
        row = await self.conn.row_by("reservations", _COLUMNS, "reservation_id", reservation_id)
        return _from_row(row) if row is not None else None

    async def for_order(self, order_id: str, *, for_update: bool = False) -> Reservation | None:
        row = await self.conn.row_by(
            "reservations", _COLUMNS, "order_id", order_id, for_update=for_update
        )
        return _from_row(row) if row is not None else None

    async def add(
        self, customer_id: str, order_id: str, amount: Money, ttl_seconds: int
    ) -> Reservation:
        row = await self.conn.fetchone(
            (
                "INSERT INTO reservations (reservation_id, customer_id, order_id, currency,"
                " amount, state, expires_at)"
                " VALUES (:id, :customer, :order, :currency, :amount, 'ACTIVE',"
                " now() + make_interval(secs => :ttl))"
                f" RETURNING {_COLUMNS}"
            ),
            {
                "id": str(uuid.uuid4()),
                "customer": customer_id,
                "order": order_id,
                "currency": amount.currency,
                "amount": amount.minor_units,
                "ttl": ttl_seconds,
            },
        )
        return _from_row(row)

    async def save(self, reservation: Reservation) -> None:
        await self.conn.update_row(
            "reservations",
            "reservation_id",
            "reservation_id",
            reservation.reservation_id,
            {
                "state": reservation.state.value,
                "payment_id": reservation.payment_id or None,
                "release_reason": reservation.release_reason or None,
                "refunded": reservation.refunded,
            },
        )

    async def overdue(self, limit: int) -> list[Reservation]:
        """Active holds past their expiry, not locked: the sweeper locks each one after its
        account (lock_if_overdue), in the one lock order of docs/design.md."""
        rows = await self.conn.fetch(
            (
                f"SELECT {_COLUMNS} FROM reservations"
                " WHERE state = 'ACTIVE' AND expires_at <= now()"
                " ORDER BY expires_at LIMIT :limit"
            ),
            {"limit": limit},
        )
        return [_from_row(row) for row in rows]

    async def lock_if_overdue(self, reservation_id: str) -> Reservation | None:
        """The hold, locked, if it is still active and overdue (another replica's sweep or a
        capture may have moved it since `overdue` saw it)."""
        row = await self.conn.fetchrow(
            (
                f"SELECT {_COLUMNS} FROM reservations WHERE reservation_id = :id"
                " AND state = 'ACTIVE' AND expires_at <= now() FOR UPDATE"
            ),
            {"id": reservation_id},
        )
        return _from_row(row) if row is not None else None

    async def list_for_customer(
        self, customer_id: str, after: PageCursor | None, limit: int
    ) -> list[Reservation]:
        page = Keyset("reservation_id", after)
        rows = await self.conn.fetch(
            (
                f"SELECT {_COLUMNS} FROM reservations"
                f" WHERE customer_id = :customer AND {page.condition}"
                f" ORDER BY {page.order_by} LIMIT :limit"
            ),
            {"customer": customer_id, "limit": limit, **page.params},
        )
        return [_from_row(row) for row in rows]

    async def mark_order_cancelled(self, order_id: str) -> None:
        await self.conn.execute(
            "INSERT INTO cancelled_orders (order_id) VALUES (:id) ON CONFLICT DO NOTHING",
            {"id": order_id},
        )

    async def before_reserving(self, order_id: str) -> BeforeReserving:
        row = await self.conn.fetchone(
            (
                "SELECT EXISTS (SELECT 1 FROM cancelled_orders WHERE order_id = :id) AS cancelled,"
                " EXISTS (SELECT 1 FROM reservations WHERE order_id = :id) AS held"
            ),
            {"id": order_id},
        )
        if row["cancelled"]:
            return BeforeReserving.CANCELLED
        return BeforeReserving.HELD if row["held"] else BeforeReserving.NOTHING


class RefundLedger:
    """The refunds Credit applied (one row per refund id) and what it could not square."""

    def __init__(self, conn: Sql) -> None:
        self.conn = conn

    async def applied(self, refund_id: str) -> bool:
        row = await self.conn.fetchrow(
            "SELECT 1 FROM applied_refunds WHERE refund_id = :id", {"id": refund_id}
        )
        return row is not None

    async def record(self, refund: AppliedRefund) -> None:
        await self.conn.execute(
            (
                "INSERT INTO applied_refunds (refund_id, payment_id, order_id, customer_id,"
                " currency, requested, given_back)"
                " VALUES (:refund, :payment, :order, :customer, :currency, :requested, :given)"
            ),
            {
                "refund": refund.refund_id,
                "payment": refund.payment_id,
                "order": refund.order_id,
                "customer": refund.customer_id,
                "currency": refund.requested.currency,
                "requested": refund.requested.minor_units,
                "given": refund.given_back.minor_units,
            },
        )

    async def note(self, discrepancy: Discrepancy) -> None:
        """A discrepancy for people to reconcile (table `reconciliation`, and the counter
        credit_reconciliation_total once the unit of work commits)."""
        d = discrepancy
        metrics.count_after_commit(metrics.RECONCILIATION, d.kind)
        await self.conn.execute(
            (
                "INSERT INTO reconciliation (kind, customer_id, order_id, payment_id,"
                " refund_id, currency, amount, detail)"
                " VALUES (:kind, :customer, :order, :payment, :refund, :currency, :amount,"
                " :detail)"
            ),
            {
                "kind": d.kind,
                "customer": d.customer_id,
                "order": d.order_id,
                "payment": d.payment_id,
                "refund": d.refund_id,
                "currency": d.amount.currency,
                "amount": d.amount.minor_units,
                "detail": d.detail[:1000],
            },
        )

    async def late_capture_refused(self, payment_id: str) -> bool:
        row = await self.conn.fetchrow(
            ("SELECT 1 FROM reconciliation WHERE payment_id = :id AND kind = 'LATE_CAPTURE_SHORT'"),
            {"id": payment_id},
        )
        return row is not None
