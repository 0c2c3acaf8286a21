"""Reservations in PostgreSQL (schema `credits`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from services.common.money import Money
from services.common.paging import PageCursor
from services.common.sql import Record, Sql
from services.credit.domain.reservation import Reservation, ReservationState

_COLUMNS = (
    "reservation_id, customer_id, order_id, currency, amount, state, expires_at,"
    " payment_id, release_reason, created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class StoredReservation:
    reservation: Reservation
    created_at: datetime
    updated_at: datetime

    @property
    def cursor(self) -> PageCursor:
        return PageCursor(self.created_at, self.reservation.reservation_id)


def _from_row(row: Record) -> StoredReservation:
    r = row
    return StoredReservation(
        Reservation(
            reservation_id=str(r["reservation_id"]),
            customer_id=str(r["customer_id"]),
            order_id=str(r["order_id"]),
            amount=Money(r["currency"], r["amount"]),
            state=ReservationState(r["state"]),
            expires_at=r["expires_at"],
            payment_id=str(r["payment_id"] or ""),
            release_reason=r["release_reason"] or "",
        ),
        r["created_at"],
        r["updated_at"],
    )


class ReservationRepository:
    def __init__(self, conn: Sql) -> None:
        self.conn = conn

    async def get(self, reservation_id: str) -> StoredReservation | None:
        row = await self.conn.fetchrow(
            f"SELECT {_COLUMNS} FROM reservations WHERE reservation_id = :id",
            {"id": reservation_id},
        )
        return _from_row(row) if row is not None else None

    async def for_order(self, order_id: str, *, for_update: bool = False) -> Reservation | None:
        lock = " FOR UPDATE" if for_update else ""
        row = await self.conn.fetchrow(
            f"SELECT {_COLUMNS} FROM reservations WHERE order_id = :id{lock}",
            {"id": order_id},
        )
        return _from_row(row).reservation if row is not None else None

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
        return _from_row(row).reservation

    async def save(self, reservation: Reservation) -> None:
        await self.conn.execute(
            (
                "UPDATE reservations SET state = :state, payment_id = :payment,"
                " release_reason = :reason, updated_at = now() WHERE reservation_id = :id"
            ),
            {
                "id": reservation.reservation_id,
                "state": reservation.state.value,
                "payment": reservation.payment_id or None,
                "reason": reservation.release_reason or None,
            },
        )

    async def lock_expired(self, limit: int) -> list[Reservation]:
        """Active holds past their expiry, locked; holds another sweeper has are skipped."""
        rows = await self.conn.fetch(
            (
                f"SELECT {_COLUMNS} FROM reservations"
                " WHERE state = 'ACTIVE' AND expires_at <= now()"
                " ORDER BY expires_at LIMIT :limit FOR UPDATE SKIP LOCKED"
            ),
            {"limit": limit},
        )
        return [_from_row(row).reservation for row in rows]

    async def list_for_customer(
        self, customer_id: str, after: PageCursor | None, limit: int
    ) -> list[StoredReservation]:
        keyset = " AND (created_at, reservation_id) < (:after_at, :after_id)" if after else ""
        rows = await self.conn.fetch(
            (
                f"SELECT {_COLUMNS} FROM reservations WHERE customer_id = :customer{keyset}"
                " ORDER BY created_at DESC, reservation_id DESC LIMIT :limit"
            ),
            {
                "customer": customer_id,
                "limit": limit,
                "after_at": after.created_at if after else None,
                "after_id": after.id if after else None,
            },
        )
        return [_from_row(row) for row in rows]

    async def mark_order_cancelled(self, order_id: str) -> None:
        await self.conn.execute(
            "INSERT INTO cancelled_orders (order_id) VALUES (:id) ON CONFLICT DO NOTHING",
            {"id": order_id},
        )

    async def order_was_cancelled(self, order_id: str) -> bool:
        row = await self.conn.fetchrow(
            "SELECT 1 FROM cancelled_orders WHERE order_id = :id", {"id": order_id}
        )
        return row is not None
