"""Named `:params` become asyncpg's positional `$n`, once per distinct statement."""

from __future__ import annotations

import pytest

from services.common.sql import Sql, compile_named


def test_each_name_gets_one_position_in_order_of_first_use() -> None:
    query, names = compile_named("UPDATE t SET a = :a, b = :b WHERE a <> :a AND id = :id")
    assert query == "UPDATE t SET a = $1, b = $2 WHERE a <> $1 AND id = $3"
    assert names == ("a", "b", "id")


def test_casts_and_literals_with_colons_are_left_alone() -> None:
    sql = "SELECT x::jsonb, CAST(:h AS jsonb), '12:30:00'::time, 'a:b' FROM t WHERE k = :k_2"
    query, names = compile_named(sql)
    assert (
        query == "SELECT x::jsonb, CAST($1 AS jsonb), '12:30:00'::time, 'a:b' FROM t WHERE k = $2"
    )
    assert names == ("h", "k_2")


def test_a_statement_without_parameters_is_unchanged() -> None:
    assert compile_named("SELECT 1") == ("SELECT 1", ())


class RecordingDriver:
    """The asyncpg calls a statement makes, and the row it is told to return."""

    def __init__(self, row: object) -> None:
        self.row = row
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    async def fetchrow(self, query: str, *args: object) -> object:
        self.calls.append((query, args))
        return self.row


async def test_a_write_back_sets_the_changes_stamps_the_row_and_reads_it_back() -> None:
    driver = RecordingDriver({"order_id": "o-1"})
    row = await Sql(driver).update_row(
        "orders", "order_id, status", "order_id", "o-1", {"status": "PAID", "payment_id": "p-1"}
    )
    assert row == {"order_id": "o-1"}
    assert driver.calls == [
        (
            "UPDATE orders SET status = $1, payment_id = $2, updated_at = now()"
            " WHERE order_id = $3 RETURNING order_id, status",
            ("PAID", "p-1", "o-1"),
        )
    ]


async def test_a_write_back_of_a_missing_row_is_an_error_not_a_silent_nothing() -> None:
    with pytest.raises(LookupError):
        await Sql(RecordingDriver(None)).update_row(
            "orders", "order_id", "order_id", "o-2", {"status": "PAID"}
        )
