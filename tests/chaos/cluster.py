"""The chaos suite's own world: NATS and PostgreSQL it starts itself (so it may kill them,
never a server of the machine), and the three real services as separate processes
(`python -m services.<name>`, started by the same `LocalMesh` as `make run`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from services.common.faults import ENV as FAULT_ENV
from services.localmesh.embedded import EmbeddedNats, EmbeddedPostgres, find_free_port
from services.localmesh.mesh import (
    HTTP_PORTS,
    SERVICES,
    LocalMesh,
    ServiceProcess,
    health_status,
)
from tests.e2e.shop import Shop

NAMES = tuple(SERVICES)


@dataclass
class Cluster:
    root: Path
    nats: EmbeddedNats = field(init=False)
    postgres: EmbeddedPostgres = field(init=False)
    mesh: LocalMesh = field(init=False)
    database_url: str = ""
    extra: dict[str, ServiceProcess] = field(default_factory=dict)  # scale-out replicas
    tainted: set[str] = field(default_factory=set)  # running with a fault or special setting

    def start(self) -> None:
        self.nats = EmbeddedNats(self.root / "nats", preferred_port=0)
        self.postgres = EmbeddedPostgres(self.root / "postgres", preferred_port=0)
        self.nats.start()
        self.postgres.start()
        self.database_url = asyncio.run(_create_database(self.postgres.url, "chaos"))
        self.mesh = LocalMesh(
            data_dir=self.root / "mesh",
            database_url=self.database_url,
            nats_url=self.nats.url,
            ports={name: 0 for name in NAMES},
            # fast sweeps and outbox polls keep scenarios short; nothing else changes
            extra_env={"EXPIRY_SWEEP_SECONDS": "1", "OUTBOX_POLL_SECONDS": "0.5"},
        )
        self.mesh.start()

    def stop(self) -> None:
        for replica in self.extra.values():
            replica.stop()
        with contextlib.suppress(Exception):
            self.mesh.stop()
        self.nats.stop()
        self.postgres.stop()

    # services -----------------------------------------------------------------------------

    def service(self, name: str) -> ServiceProcess:
        return self.mesh.services[name]

    def target(self, name: str) -> str:
        return self.service(name).target

    def env(
        self, fault: str | None = None, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        env = self.mesh.service_env()
        env.pop(FAULT_ENV, None)
        if fault:
            env[FAULT_ENV] = fault
        env.update(extra or {})
        return env

    def kill(self, name: str) -> None:
        """SIGKILL: a crash, no clean-up."""
        proc = self.service(name)
        proc.signal(signal.SIGKILL)
        proc.wait(10)

    def restart(
        self,
        name: str,
        fault: str | None = None,
        wait: bool = True,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """(Re)start one service on its port, optionally armed with a crash point."""
        proc = self.service(name)
        if proc.process is not None and proc.process.poll() is None:
            proc.stop()
        proc.start(self.env(fault, extra), None)
        if fault or extra:
            self.tainted.add(name)
        else:
            self.tainted.discard(name)
        if wait:
            self.wait_serving(name)

    def wait_serving(self, *names: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        for name in names or NAMES:
            proc = self.service(name)
            while health_status(proc.target, proc.service_name, timeout=1.0) != "SERVING":
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} not SERVING after {timeout}s")
                time.sleep(0.2)

    def running(self, name: str) -> bool:
        proc = self.service(name).process
        return proc is not None and proc.poll() is None

    def exit_code(self, name: str, timeout: float) -> int | None:
        return self.service(name).wait(timeout)

    def heal(self) -> None:
        """Everything back up (after a scenario, whatever it did), without any fault armed."""
        if not self.nats.running:
            self.nats.start()
        if not self.postgres.running:
            self.postgres.start()
        for replica in self.extra.values():
            replica.stop()
        self.extra.clear()
        for name in NAMES:
            if not self.running(name) or name in self.tainted:
                self.restart(name, wait=False)
        self.wait_serving()

    def start_replica(self, name: str, extra: Mapping[str, str] | None = None) -> ServiceProcess:
        """A second instance of `name` on another port: same database and NATS."""
        port, _ = find_free_port(0)
        replica = ServiceProcess(name, port, self.root / "mesh" / "logs" / f"{name}-2.log")
        env = self.env(None, extra)
        env[SERVICES[name][1]] = str(port)
        env[HTTP_PORTS[name][1]] = str(find_free_port(0)[0])  # its own /metrics port too
        replica.start(env, None)
        self.extra[name] = replica
        deadline = time.monotonic() + 90
        while health_status(replica.target, replica.service_name, timeout=1.0) != "SERVING":
            if time.monotonic() > deadline:
                raise AssertionError(f"replica of {name} not SERVING")
            time.sleep(0.2)
        return replica

    # clients ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def shop(
        self, targets: Mapping[str, str] | None = None, round_robin: bool = False
    ) -> AsyncIterator[Shop]:
        targets = targets or {name: self.target(name) for name in NAMES}
        options = [("grpc.lb_policy_name", "round_robin")] if round_robin else []
        channels = {
            name: grpc.aio.insecure_channel(targets[name], options=options) for name in NAMES
        }
        try:
            yield Shop.connect(channels)
        finally:
            for channel in channels.values():
                await channel.close()

    async def db(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url)


async def _create_database(admin_url: str, prefix: str) -> str:
    name = f"{prefix}_{os.getpid()}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"
