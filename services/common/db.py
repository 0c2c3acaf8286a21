"""Async SQLAlchemy on asyncpg; each service owns one PostgreSQL schema."""

from __future__ import annotations

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(database_url: str, schema: str, *, pool_size: int = 10) -> AsyncEngine:
    """An engine whose connections resolve unqualified table names in `schema`.

    Args:
        database_url: the postgresql(+asyncpg):// URL.
        schema: the service's schema (its `search_path`).
        pool_size: connections kept open.

    Returns:
        The async engine (SQLAlchemy's pool, asyncpg underneath).
    """
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No ping before each checkout: it cost a round trip per transaction (see
        # docs/performance.md). A PostgreSQL restart still heals: the first statement on a
        # dead connection fails as a disconnect (UNAVAILABLE for that one call), and
        # SQLAlchemy then recycles every pooled connection made before it.
        pool_pre_ping=False,
        pool_timeout=5,
        connect_args={
            "server_settings": {"search_path": schema, "application_name": f"shop-{schema}"},
            "timeout": 5,
            "command_timeout": 30,
        },
    )


def is_connection_error(error: BaseException) -> bool:
    """True when the database is unreachable, as opposed to a bug or a constraint.

    Args:
        error: what a database call raised.

    Returns:
        True for a lost or refused connection (retry later), False otherwise.
    """
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sa_exc.TimeoutError):  # pool exhausted or connect timed out
        return True
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(
            cause,
            OSError
            | TimeoutError
            | asyncpg.exceptions.PostgresConnectionError
            | asyncpg.exceptions.CannotConnectNowError
            | asyncpg.exceptions.AdminShutdownError
            | asyncpg.exceptions.TooManyConnectionsError,
        ):
            return True
        if isinstance(cause, asyncpg.exceptions.InterfaceError) and "closed" in str(cause):
            return True  # a call on a connection the server or the network closed
        if isinstance(cause, asyncpg.exceptions.InternalClientError):
            return True  # a connection caught in the middle of its server going away
        cause = cause.__cause__ or cause.__context__
    return False
