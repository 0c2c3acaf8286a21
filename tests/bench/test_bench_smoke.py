"""The benchmark harness itself, for about a second per phase: it starts the mesh, drives
every phase, checks the books and writes its figures. Timings are never asserted here (a
benchmark is not a test); only that every figure is there and the run was clean."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bench.harness import Bench, BenchConfig
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
    for phase in ("payment", "saga", "saga_half"):
        assert results[phase]["cpu_seconds_per_op"] > 0
        assert set(results[phase]["cpu_seconds"]) >= {"order", "credit", "payment", "nats"}
    for phase in ("saga", "saga_half"):  # a saga watches its order (WatchOrder): no reads
        assert results[phase]["get_order_reads_per_saga"] == 0, results[phase]
    assert results["payment_vs_echo"] > 0
    assert results["saga_vs_echo"] > 0
    assert results["fanout_vs_echo"] > 0
    assert results["payment_vs_fanout"] > 0
    assert results["connect_vs_grpc"] > 0
    assert set(results["read_connect"]["cpu_seconds"]) == {"credit"}
    assert results["event_lag"]["saga"]["events"] > 0
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
