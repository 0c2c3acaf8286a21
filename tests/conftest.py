"""Session-wide real infrastructure: NATS with JetStream and PostgreSQL.

Embedded servers from the project's wheels in a temporary folder (so the suite needs nothing
installed), or the ones named by NATS_URL / DATABASE_URL when those are set.
"""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from services.localmesh.embedded import EmbeddedNats, EmbeddedPostgres
from services.localmesh.mesh import LocalMesh


@dataclass(frozen=True)
class Infra:
    database_url: str  # postgresql://… of an admin database
    nats_url: str

    async def create_database(self, prefix: str = "test") -> str:
        """A fresh, empty database on the server; returns its postgresql:// URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        base, _, _ = self.database_url.rpartition("/")
        return f"{base}/{name}"


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    root: Path = tmp_path_factory.mktemp("infra")
    nats: EmbeddedNats | None = None
    postgres: EmbeddedPostgres | None = None
    nats_url = os.environ.get("NATS_URL")
    database_url = os.environ.get("DATABASE_URL")
    try:
        if not nats_url:
            nats = EmbeddedNats(root / "nats", preferred_port=0)
            nats.start()
            nats_url = nats.url
        if not database_url:
            postgres = EmbeddedPostgres(root / "postgres", preferred_port=0)
            postgres.start()
            database_url = postgres.url
        yield Infra(database_url.replace("postgresql+asyncpg://", "postgresql://"), nats_url)
    finally:
        if nats is not None:
            nats.stop()
        if postgres is not None:
            postgres.stop()


@pytest.fixture(scope="session")
def mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """The three services as separate processes on free ports, on a fresh database; one per
    session, shared by the end-to-end and the contract tests."""
    database_url = asyncio.run(infra.create_database("e2e"))
    mesh = LocalMesh(
        data_dir=tmp_path_factory.mktemp("mesh"),
        database_url=database_url,
        nats_url=infra.nats_url,
        ports={"order": 0, "credit": 0, "payment": 0},
    )
    mesh.start()
    yield mesh
    mesh.stop()


def pytest_unconfigure(config: pytest.Config) -> None:
    """The Connect client's HTTP library (pyqwest) can abort the interpreter as it exits
    while its objects still wait for the collector (docs/clients.md): collect them first."""
    gc.collect()
