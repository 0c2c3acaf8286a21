"""Accounts in PostgreSQL (schema `credits`). Reads for update take the row lock that
serializes every balance change of one customer."""

from __future__ import annotations

from services.common.sql import Record, Sql
from services.credit.domain.model import CreditAccount

_COLUMNS = "customer_id, currency, available, reserved, spent, topped_up, updated_at"


def _from_row(r: Record) -> CreditAccount:
    return CreditAccount(
        customer_id=str(r["customer_id"]),
        currency=r["currency"],
        available=r["available"],
        reserved=r["reserved"],
        spent=r["spent"],
        topped_up=r["topped_up"],
        updated_at=r["updated_at"],
    )


class AccountRepository:
    def __init__(self, conn: Sql) -> None:
        self.conn = conn

    async def get(self, customer_id: str, *, for_update: bool = False) -> CreditAccount | None:
        row = await self.conn.row_by(
            "accounts", _COLUMNS, "customer_id", customer_id, for_update=for_update
        )
        return _from_row(row) if row is not None else None

    async def get_or_open(self, customer_id: str, currency: str) -> CreditAccount:
        """Lock the customer's account, opening an empty one in `currency` if there is none."""
        await self.conn.execute(
            (
                "INSERT INTO accounts"
                " (customer_id, currency, available, reserved, spent, topped_up)"
                " VALUES (:id, :currency, 0, 0, 0, 0)"
                " ON CONFLICT (customer_id) DO NOTHING"
            ),
            {"id": customer_id, "currency": currency},
        )
        account = await self.get(customer_id, for_update=True)
        assert account is not None
        return account

    async def save(self, account: CreditAccount) -> CreditAccount:
        row = await self.conn.update_row(
            "accounts",
            _COLUMNS,
            "customer_id",
            account.customer_id,
            {
                "available": account.available,
                "reserved": account.reserved,
                "spent": account.spent,
                "topped_up": account.topped_up,
            },
        )
        return _from_row(row)
