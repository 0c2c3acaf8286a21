"""The benchmark harness itself, for about a second per phase: it starts the mesh, drives
every phase, checks the books and writes its figures. Timings are never asserted here (a
benchmark is not a test); only that every figure is there and the run was clean."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bench.harness import GOALS, Bench, BenchConfig, goals
from bench.report import table, verdict, write_json
from tests.conftest import Infra

pytestmark = pytest.mark.e2e

PHASES = (
    "echo",
    "fanout",
    "read_grpc",
    "read_connect",
    "create_order",
    "payment",
    "saga",
    "saga_half",
    "saga_alone",
)


def test_bench_runs_every_phase_and_reports_every_figure(infra: Infra, tmp_path: Path) -> None:
    database_url = asyncio.run(infra.create_database("bench"))
    config = BenchConfig(
        seconds=1.0,
        concurrency=4,
        users=4,
        database_url=database_url,
        nats_url=None,  # its own NATS: durable consumer names must not meet the e2e mesh's
        data_dir=tmp_path,
        quiet=True,
    )
    results = asyncio.run(Bench(config).run())

    assert results["problems"] == []
    assert results["ok"] is True
    for phase in PHASES:
        figures = results[phase]
        assert figures["count"] > 0, (phase, figures)
        assert figures["errors"] == 0, (phase, figures)
        assert figures["p50_ms"] is not None
        assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    for phase in ("payment", "saga", "saga_half", "saga_alone"):
        assert results[phase]["cpu_seconds_per_op"] > 0
        assert set(results[phase]["cpu_seconds"]) >= {"order", "credit", "payment", "nats"}
    for phase in ("saga", "saga_half", "saga_alone"):
        steps = results[phase]["steps"]
        assert list(steps) == ["create_order", "to_reserved", "process_payment", "to_paid"]
        assert all(0 < step["p50_ms"] <= step["p99_ms"] for step in steps.values()), steps
    for phase in ("saga", "saga_half"):  # a saga watches its order (WatchOrder): no reads
        assert results[phase]["get_order_reads_per_saga"] == 0, results[phase]
    assert results["payment_vs_echo"] > 0
    assert results["saga_vs_echo"] > 0
    assert results["fanout_vs_echo"] > 0
    assert results["payment_vs_fanout"] > 0
    assert results["connect_vs_grpc"] > 0
    assert set(results["read_connect"]["cpu_seconds"]) == {"credit"}
    assert results["event_lag"]["saga"]["events"] > 0
    saga_lag = results["event_lag"]["saga"]
    assert saga_lag["relay_p99_ms"] is not None
    assert saga_lag["relay_p50_ms"] is not None
    assert saga_lag["apply_p50_ms"] is not None
    assert results["event_lag"]["saga_alone"]["events"] > 0
    assert saga_lag["apply_p99_ms"] is not None
    assert set(saga_lag["apply_p99_ms_by_consumer"]) >= {"order-payments", "credit-orders"}
    assert results["books"]["ok"] is True
    assert results["books"]["payments_succeeded"] == results["books"]["orders_paid"]
    assert all(results["peak_rss_mb"][name] > 0 for name in ("order", "credit", "payment"))
    assert results["versions"]["grpcio"]
    assert results["machine"]["cpus"]

    out = tmp_path / "bench-results.json"
    write_json(results, out)
    assert json.loads(out.read_text())["saga_vs_echo"] == results["saga_vs_echo"]
    assert "saga, full speed" in table(results)
    assert "GetOrder reads per saga" in table(results)
    assert "connect_vs_grpc" in table(results)
    assert verdict(results).startswith("RESULT: OK")

    by_figure = {goal["figure"]: goal for goal in results["goals"]}
    assert set(by_figure) == {name for name, _, _ in GOALS} | {"books"}
    assert all(isinstance(goal["met"], bool) for goal in results["goals"])
    assert by_figure["errors"] == {"figure": "errors", "value": 0.0, "goal": "<= 0", "met": True}
    assert by_figure["books"]["met"] is True
    assert by_figure["get_order_reads_per_saga"]["met"] is True  # the sagas watch
    assert by_figure["saga_vs_echo"]["value"] == results["saga_vs_echo"]
    assert "goals (" in table(results)


def test_a_missed_goal_is_reported_and_does_not_fail_the_run() -> None:
    phase = {"errors": 0, "p50_ms": 40.0, "p99_ms": 90.0, "get_order_reads_per_saga": 0.0}
    results = {
        "saga_vs_echo": 0.01,  # below its goal
        "payment_vs_fanout": 0.3,
        "saga": dict(phase),
        "saga_half": dict(phase),
        "event_lag": {"payment": {"p99_ms": 100.0}},
        "peak_rss_mb": {"order": 90.0, "credit": 95.0, "payment": 130.0},  # one above
        "books": {"ok": True, "problems": []},
    }
    by_figure = {goal["figure"]: goal for goal in goals(results)}
    assert by_figure["saga_vs_echo"]["met"] is False
    assert by_figure["payment_vs_fanout"]["met"] is True
    assert by_figure["saga_half_p50_ms"]["met"] is False  # 40 > 15
    assert by_figure["event_lag_payment_p99_ms"]["met"] is True
    assert (by_figure["peak_rss_mb"]["value"], by_figure["peak_rss_mb"]["met"]) == (130.0, False)
    assert by_figure["errors"]["met"] is True
    assert by_figure["books"]["met"] is True


def test_a_run_with_errors_says_so_loudly() -> None:
    results = {"ok": False, "problems": ["3 errors in phase saga"]}
    text = verdict(results)
    assert "ERRORS" in text
    assert "3 errors in phase saga" in text


def test_bench_with_tracing_exports_the_spans_to_its_receiver(infra: Infra, tmp_path: Path) -> None:
    """BENCH_TRACING=1: the same run, the services exporting spans to a local receiver."""
    database_url = asyncio.run(infra.create_database("bench"))
    config = BenchConfig(
        seconds=0.5,
        concurrency=2,
        users=2,
        database_url=database_url,
        nats_url=None,
        data_dir=tmp_path,
        quiet=True,
        tracing=True,
    )
    results = asyncio.run(Bench(config).run())
    assert results["ok"] is True
    assert results["config"]["tracing"] is True
    assert results["saga"]["count"] > 0
    # at least a server span per ProcessPayment and per CreateOrder, and the consumers'
    assert results["spans_exported"] > results["saga"]["count"] * 4
