"""The contract suite's shared pieces: the descriptors compiled from proto/ (once per session,
at collection, so tests are parametrized by them), the live mesh's reflection, and the
coverage table printed at the end of the run (rows: RPCs, events, services; columns: checks).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from services.localmesh.mesh import LocalMesh
from tests.contract.descriptors import Contract

CONTRACT = Contract.load()

# (kind, row) -> check -> outcome; filled by the report hook below from the `contract` marker.
COVERAGE: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
CHECK_ORDER: dict[str, list[str]] = defaultdict(list)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "contract(kind, check): a contract check, one row of the coverage table"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    marker = item.get_closest_marker("contract")
    callspec = getattr(item, "callspec", None)
    if marker is None or callspec is None:
        return report
    if call.when == "call" or (call.when == "setup" and not report.passed):
        kind, check = marker.args
        row = next(iter(callspec.params.values()))
        name = getattr(row, "id", str(row))
        outcome = "ok" if report.passed else ("skip" if report.skipped else "FAIL")
        cells = COVERAGE[(kind, name)]
        if cells.get(check) != "FAIL":  # several cases per row (e.g. each UUID field)
            cells[check] = outcome
        if check not in CHECK_ORDER[kind]:
            CHECK_ORDER[kind].append(check)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not COVERAGE:
        return
    write = terminalreporter.write_line
    terminalreporter.section("contract coverage (derived from proto/)")
    for kind in ("rpc", "event", "service", "consumer"):
        rows = sorted(name for k, name in COVERAGE if k == kind)
        if not rows:
            continue
        checks = CHECK_ORDER[kind]
        width = max(len(r) for r in rows)
        write(f"{kind:<{width}}  " + "  ".join(checks))
        for name in rows:
            cells = COVERAGE[(kind, name)]
            write(
                f"{name:<{width}}  " + "  ".join(f"{cells.get(c, '-'):<{len(c)}}" for c in checks)
            )
        write("")


@pytest.fixture(scope="session")
def contract() -> Contract:
    return CONTRACT


@dataclass
class Served:
    """Which process of the mesh serves each gRPC service, from its server reflection."""

    targets: dict[str, str]  # full service name -> target
    pools: dict[str, descriptor_pool.DescriptorPool]  # target -> reflection-backed pool
    channels: dict[str, grpc.Channel]  # target -> channel
    http: dict[str, str]  # target -> the same process's HTTP port (host:port): the Connect door

    def target(self, service: str) -> str:
        if service not in self.targets:
            raise AssertionError(
                f"{service} is in proto/ but no process of the mesh lists it in reflection "
                f"(listed: {sorted(self.targets)})"
            )
        return self.targets[service]

    def channel(self, service: str) -> grpc.Channel:
        return self.channels[self.target(service)]

    def pool(self, service: str) -> descriptor_pool.DescriptorPool:
        return self.pools[self.target(service)]

    def http_address(self, service: str) -> str:
        """The HTTP port of the process that serves `service` over gRPC."""
        return self.http[self.target(service)]


@pytest.fixture(scope="session")
def served(mesh: LocalMesh) -> Iterator[Served]:
    targets: dict[str, str] = {}
    pools: dict[str, descriptor_pool.DescriptorPool] = {}
    channels: dict[str, grpc.Channel] = {}
    http: dict[str, str] = {}
    for process in mesh.services.values():
        http[process.target] = process.http_address
        channel = grpc.insecure_channel(process.target)
        database = ProtoReflectionDescriptorDatabase(channel)
        channels[process.target] = channel
        pools[process.target] = descriptor_pool.DescriptorPool(database)
        for service in database.get_services():
            targets.setdefault(service, process.target)
    try:
        yield Served(targets, pools, channels, http)
    finally:
        for channel in channels.values():
            channel.close()
