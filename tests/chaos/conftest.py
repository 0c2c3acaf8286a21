"""Fixtures of the fault-injection suite (`make chaos`): one cluster for the session, a
`chaos` object per scenario that counts faults and sagas, and the invariant check after
every scenario (in the fixture's teardown, whatever the scenario did). The table of results
is printed at the end of the run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.chaos.cluster import Cluster
from tests.chaos.invariants import settle_and_check
from tests.chaos.load import Tracker


@dataclass
class Record:
    scenario: str
    faults: int = 0
    sagas: int = 0
    checks: int = 0
    result: str = "?"
    seconds: float = 0.0


RECORDS: dict[str, Record] = {}


@dataclass
class Chaos:
    """What a scenario gets: the cluster, a ledger of top-ups, and its counters."""

    cluster: Cluster
    tracker: Tracker
    record: Record

    def fault(self, n: int = 1) -> None:
        self.record.faults += n

    def sagas(self, n: int = 1) -> None:
        self.record.sagas += n

    async def check(self, timeout: float = 120.0) -> None:
        self.record.checks += await settle_and_check(
            self.cluster.database_url, self.cluster.nats.url, self.tracker.topped_up, timeout
        )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    world = Cluster(tmp_path_factory.mktemp("chaos"))
    world.start()
    yield world
    world.stop()


@pytest.fixture(scope="session")
def tracker() -> Tracker:
    return Tracker()


@pytest.fixture
async def chaos(
    request: pytest.FixtureRequest, cluster: Cluster, tracker: Tracker
) -> AsyncIterator[Chaos]:
    name = request.node.name.removeprefix("test_")
    record = RECORDS.setdefault(request.node.nodeid, Record(name))
    started = time.monotonic()
    await asyncio.to_thread(cluster.heal)
    scenario = Chaos(cluster, tracker, record)
    try:
        yield scenario
    finally:
        # After EVERY scenario, passed or not: heal the mesh, then all the invariants.
        await asyncio.to_thread(cluster.heal)
        await scenario.check()
        record.seconds = time.monotonic() - started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    record = RECORDS.get(item.nodeid)
    if record is not None:
        if report.failed:
            record.result = "FAILED" if report.when == "call" else f"ERROR ({report.when})"
        elif report.when == "teardown" and record.result == "?":
            record.result = "passed"
    return report


def _number(record: Record) -> tuple[int, str]:
    head = record.scenario.split("_", 1)[0]
    return (int(head) if head.isdigit() else 99, record.scenario)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RECORDS:
        return
    rows = [("scenario", "faults injected", "sagas run", "invariant checks", "result", "time")]
    for r in sorted(RECORDS.values(), key=_number):
        rows.append(
            (r.scenario, str(r.faults), str(r.sagas), str(r.checks), r.result, f"{r.seconds:.0f}s")
        )
    total = (
        "total",
        str(sum(r.faults for r in RECORDS.values())),
        str(sum(r.sagas for r in RECORDS.values())),
        str(sum(r.checks for r in RECORDS.values())),
        "all passed" if all(r.result == "passed" for r in RECORDS.values()) else "FAILURES",
        f"{sum(r.seconds for r in RECORDS.values()):.0f}s",
    )
    rows.append(total)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    terminalreporter.section("chaos results")
    for i, row in enumerate(rows):
        line = " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        terminalreporter.write_line(f"| {line} |")
        if i in (0, len(rows) - 2):
            terminalreporter.write_line("|" + "|".join("-" * (w + 2) for w in widths) + "|")
