"""Named `:params` become asyncpg's positional `$n`, once per distinct statement."""

from __future__ import annotations

from services.common.sql import compile_named


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
