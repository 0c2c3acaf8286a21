"""Schema migrations: ordered SQL files, applied once, under a lock.

Equivalent to Alembic's linear history without its runtime: each service ships
`migrations/NNNN_name.sql`; the shared core's own files (outbox, inbox, idempotency keys)
come first. Replicas starting together serialize on a PostgreSQL advisory lock, so a fresh
database is migrated exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file to apply once, under its version name."""

    version: str  # "common/0001_outbox", "credit/0001_accounts"
    sql: str


def load_migrations(package: str, prefix: str) -> list[Migration]:
    """The package's `NNNN_*.sql` files, in order.

    Args:
        package: the migrations package, e.g. `services.credit.migrations`.
        prefix: the version prefix, e.g. `credit` (versions read `credit/0001_accounts`).

    Returns:
        Its migrations, sorted by file name.
    """
    files = sorted(
        (f for f in resources.files(package).iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    return [Migration(f"{prefix}/{f.name.removesuffix('.sql')}", f.read_text()) for f in files]


def core_migrations() -> list[Migration]:
    """The core's own migrations (outbox, inbox, request ids), for every service's schema.

    Returns:
        The migrations of services/common/migrations, in order.
    """
    return load_migrations("services.common.migrations", "common")


async def migrate(engine: AsyncEngine, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply what is missing, in order, in one transaction. Returns the versions applied.

    Args:
        engine: the service's engine.
        schema: the schema to migrate (created if missing).
        migrations: every migration, in order.

    Returns:
        The versions applied now (empty when up to date).
    """
    applied_now: list[str] = []
    async with engine.begin() as conn:
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"migrate:{schema}"}
        )
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.execute(
            text(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        done = set(
            (await conn.execute(text(f'SELECT version FROM "{schema}".schema_migrations')))
            .scalars()
            .all()
        )
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        for migration in migrations:
            if migration.version in done:
                continue
            log.info("applying migration %s to schema %s", migration.version, schema)
            # Simple-query protocol: one file may hold many statements.
            await raw.execute(f'SET LOCAL search_path TO "{schema}";\n{migration.sql}')
            await conn.execute(
                text(f'INSERT INTO "{schema}".schema_migrations (version) VALUES (:v)'),
                {"v": migration.version},
            )
            applied_now.append(migration.version)
    return applied_now
