"""The benchmark's outputs: a table on the terminal, bench-results.json and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PHASES = (
    ("echo", "echo baseline (req)"),
    ("fanout", "fan-out ceiling (req)"),
    ("read_grpc", "GetCreditAccount gRPC"),
    ("read_connect", "GetCreditAccount JSON"),
    ("create_order", "CreateOrder (prep)"),
    ("payment", "ProcessPayment"),
    ("saga", "saga, full speed"),
    ("saga_half", "saga, half speed"),
    ("saga_alone", "saga, one at a time"),
)


STATEMENTS_SHOWN = 30  # of BENCH_SQL_STATS's list; the JSON has them all


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'phase':<22}{'ops/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}"
        f"{'count':>9}{'errors':>8}{'CPU s/op':>10}",
    ]
    for key, label in PHASES:
        row = results.get(key)
        if row is None:
            continue
        lines.append(
            f"{label:<22}{_num(row['rate']):>10}{_num(row['p50_ms']):>10}"
            f"{_num(row['p95_ms']):>10}{_num(row['p99_ms']):>10}{row['count']:>9}"
            f"{row['errors']:>8}{_num(row.get('cpu_seconds_per_op'), 4):>10}"
        )
    lines.append("")
    for name, lag in results.get("event_lag", {}).items():
        lines.append(
            f"event lag ({name}): p50 {_num(lag['p50_ms'])} ms, p99 {_num(lag['p99_ms'])} ms"
            f" over {lag['events']} deliveries (p50 / p99 before publication"
            f" {_num(lag.get('relay_p50_ms'))} / {_num(lag.get('relay_p99_ms'))} ms, after it"
            f" {_num(lag.get('apply_p50_ms'))} / {_num(lag.get('apply_p99_ms'))} ms)"
        )
    for key, label in (
        ("saga", "full speed"),
        ("saga_half", "half speed"),
        ("saga_alone", "one at a time"),
    ):
        if steps := results.get(key, {}).get("steps"):
            lines.append(
                f"saga steps, {label}, p50 / p99 ms: "
                + ", ".join(
                    f"{step} {_num(figure['p50_ms'])} / {_num(figure['p99_ms'])}"
                    for step, figure in steps.items()
                )
            )
    rss = results.get("peak_rss_mb", {})
    lines.append("peak RSS (MB): " + ", ".join(f"{k} {v}" for k, v in rss.items()))
    saga = results.get("saga", {})
    cpu = saga.get("cpu_seconds", {})
    if cpu:
        lines.append(
            "CPU s per saga (full speed): "
            + ", ".join(
                f"{k} {v / saga['count']:.4f}" if saga.get("count") else f"{k} -"
                for k, v in cpu.items()
            )
        )
    if "statements_per_saga" in saga:
        lines.append(
            f"SQL statements per saga (full speed, pg_stat_statements):"
            f" {_num(saga['statements_per_saga'], 2)}; the most frequent:"
        )
        lines += [
            f"  {row['per_saga']:6.2f}  {row['mean_ms']:7.3f} ms  {row['query'][:100]}"
            for row in saga["statements"][:STATEMENTS_SHOWN]
        ]
    reads = [
        f"{label} {_num(results[key].get('get_order_reads_per_saga'), 2)}"
        for key, label in (("saga", "full speed"), ("saga_half", "half speed"))
        if key in results
    ]
    if reads:
        lines.append(
            "GetOrder reads per saga while waiting (0 when watching, 2 at best when reading): "
            + ", ".join(reads)
        )
    lines.append(
        f"payment_vs_echo {_num(results.get('payment_vs_echo'), 3)}"
        f"   saga_vs_echo {_num(results.get('saga_vs_echo'), 4)}"
        f"   fanout_vs_echo {_num(results.get('fanout_vs_echo'), 3)} (the ceiling of"
        f" payment_vs_echo; ProcessPayment reaches {_num(results.get('payment_vs_fanout'), 3)}"
        " of it)"
    )
    if "connect_vs_grpc" in results:
        grpc_cpu = results["read_grpc"].get("cpu_seconds_per_op")
        connect_cpu = results["read_connect"].get("cpu_seconds_per_op")
        lines.append(
            f"connect_vs_grpc {_num(results['connect_vs_grpc'], 3)} (GetCreditAccount over"
            f" Connect JSON / over gRPC; Credit's CPU per call {_num(connect_cpu, 5)} s vs"
            f" {_num(grpc_cpu, 5)} s)"
        )
    if results.get("goals"):
        met = sum(1 for goal in results["goals"] if goal["met"])
        count = len(results["goals"])
        lines.append(f"\ngoals ({met} of {count} met; a missed goal is reported, not an error):")
        for goal in results["goals"]:
            value = goal["value"]
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            mark = "met" if goal["met"] else "MISSED"
            lines.append(f"  {goal['figure']:<28}{shown:>10}   goal {goal['goal']:<10} {mark}")
    books = results.get("books", {})
    lines.append(
        f"books: {'OK' if books.get('ok') else 'BROKEN'}"
        f" ({books.get('payments_succeeded', '?')} payments, {books.get('orders_paid', '?')}"
        f" paid orders, {books.get('holds_captured', '?')} captured holds)"
    )
    return "\n".join(lines)


def verdict(results: dict[str, Any]) -> str:
    if results.get("ok"):
        return "RESULT: OK - zero errors, every invariant holds"
    bar = "!" * 78
    problems = "\n".join(f"!!  {p}" for p in results.get("problems", []))
    headline = "!!  THIS RUN HAD ERRORS OR BROKEN INVARIANTS: its figures are not valid"
    return f"{bar}\n{headline}\n{problems}\n{bar}"


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


def chart(results: dict[str, Any], path: Path) -> bool:
    """Latency percentiles and throughput per phase; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    phases = [(key, label) for key, label in PHASES if key in results]
    labels = [label for _, label in phases]
    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.25
    for offset, (field, name) in enumerate(
        (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))
    ):
        values = [results[key][field] or 0.0 for key, _ in phases]
        positions = [i + (offset - 1) * width for i in range(len(phases))]
        latency.bar(positions, values, width, label=name)
    latency.set_xticks(range(len(phases)), labels, rotation=20, ha="right")
    latency.set_ylabel("latency (ms)")
    latency.set_yscale("log")
    latency.set_title("Latency percentiles")
    latency.legend()
    rates = [results[key]["rate"] for key, _ in phases]
    bars = throughput.bar(labels, rates, color="tab:green")
    throughput.bar_label(bars, fmt="%.0f")
    throughput.set_xticks(range(len(phases)), labels, rotation=20, ha="right")
    throughput.set_ylabel("completed operations per second")
    throughput.set_yscale("log")
    # Two short lines: one long title ran past the figure's edge.
    throughput.set_title(
        "Throughput\n"
        f"payment/echo {results.get('payment_vs_echo')}, saga/echo {results.get('saga_vs_echo')},"
        f"\nfan-out/echo {results.get('fanout_vs_echo')},"
        f" Connect/gRPC {results.get('connect_vs_grpc')}",
        fontsize=10,
    )
    status = "OK" if results.get("ok") else "ERRORS"
    figure.suptitle(
        f"shop-mesh bench, {results['config']['seconds']:.0f} s per phase,"
        f" {results['machine']['cpus']} CPUs - {status}"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
