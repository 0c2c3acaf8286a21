"""`python -m bench` (`make bench`): see bench/__init__.py and docs/performance.md.

Environment: BENCH_SECONDS (20) per phase, BENCH_CONCURRENCY (16) callers for echo and
payment, BENCH_USERS (16) saga virtual users, BENCH_OUT (bench-results.json), BENCH_CHART
(bench-results.png), DATABASE_URL / NATS_URL to use external servers instead of embedded ones,
BENCH_TRACING=1 to run the services with tracing on, exporting every span to a local OTLP
receiver (compare its CPU per saga with a run without it; docs/observability.md).
Exits 1 when the run had errors or broke an invariant.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

from bench.harness import BenchConfig, run
from bench.report import chart, table, verdict, write_json


def main() -> int:
    config = BenchConfig.from_env()
    out = Path(os.environ.get("BENCH_OUT") or "bench-results.json")
    picture = Path(os.environ.get("BENCH_CHART") or "bench-results.png")
    print(
        f"==> shop-mesh bench: {config.seconds:.0f} s per phase, {config.concurrency} callers,"
        f" {config.users} saga users" + (", tracing on" if config.tracing else ""),
        flush=True,
    )
    try:
        results = run(config)
    except KeyboardInterrupt:
        print("interrupted; every server it started is stopped", file=sys.stderr)
        return 130
    print()
    print(table(results))
    if "spans_exported" in results:
        print(f"\ntracing on: {results['spans_exported']} spans exported to the local receiver")
    write_json(results, out)
    print(f"\nfigures written to {out}")
    if chart(results, picture):
        print(f"chart written to {picture}")
    else:
        print("chart skipped: matplotlib is not installed (pip install -e '.[bench]')")
    print(verdict(results), flush=True)
    return 0 if results.get("ok") else 1


if __name__ == "__main__":
    status = main()
    # The Connect phase's HTTP library (pyqwest) can abort the interpreter as it exits while
    # its objects still wait for the collector: collect them now (docs/clients.md).
    gc.collect()
    sys.exit(status)
