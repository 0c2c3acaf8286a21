from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import create_engine
from services.common.migrator import Migration, core_migrations, load_migrations, migrate
from tests.conftest import Infra

pytestmark = pytest.mark.integration

# A business table for the core's tests: a row per "thing", and a counter an event bumps.
TEST_TABLES = Migration(
    "test/0001_things",
    "CREATE TABLE things (id uuid PRIMARY KEY, name text NOT NULL);"
    "CREATE TABLE counters (name text PRIMARY KEY, value bigint NOT NULL);",
)


@pytest.fixture(scope="session")
async def database_url(infra: Infra) -> str:
    url = await infra.create_database("integration")
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A fresh schema per test, migrated with the core's tables plus TEST_TABLES."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    engine = create_engine(database_url, schema, pool_size=5)
    await migrate(engine, schema, [*core_migrations(), TEST_TABLES])
    yield engine
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await engine.dispose()


@pytest.fixture
async def payment_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A fresh schema per test with the core's tables and Payment's own."""
    schema = f"p_{uuid.uuid4().hex[:10]}"
    engine = create_engine(database_url, schema, pool_size=10)
    migrations = [*core_migrations(), *load_migrations("services.payment.migrations", "payment")]
    await migrate(engine, schema, migrations)
    yield engine
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await engine.dispose()


@pytest.fixture
async def credit_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A fresh schema per test with the core's tables and Credit's own."""
    schema = f"c_{uuid.uuid4().hex[:10]}"
    engine = create_engine(database_url, schema, pool_size=5)
    migrations = [*core_migrations(), *load_migrations("services.credit.migrations", "credit")]
    await migrate(engine, schema, migrations)
    yield engine
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await engine.dispose()
