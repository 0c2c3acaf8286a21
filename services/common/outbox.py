"""The outbox relay: publishes committed outbox rows to JetStream, in order, at least once.

`Nats-Msg-Id` = event id, so a row re-sent after a crash (published, its mark not yet
committed) is dropped by JetStream's duplicate window; consumers' inboxes absorb anything
later. While NATS is down the rows simply wait; nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import metrics
from services.common.jetstream import Messaging
from services.common.sql import Transaction

log = logging.getLogger(__name__)

# Claim and mark in one statement: the rows are locked (other relays skip them) and marked
# inside the transaction that publishes them, so a crash before COMMIT leaves them unmarked.
_CLAIM = (
    "UPDATE outbox SET published_at = now() WHERE seq IN ("
    "SELECT seq FROM outbox WHERE published_at IS NULL"
    " ORDER BY seq LIMIT :limit FOR UPDATE SKIP LOCKED"
    ") RETURNING seq, subject, payload, headers"
)
_UNMARK = "UPDATE outbox SET published_at = NULL WHERE seq = ANY(:seqs)"
# The backlog, by the partial index of unpublished rows (outbox_pending_events and
# outbox_oldest_pending_age_seconds), at most once a second.
_BACKLOG = (
    "SELECT count(*) AS pending,"
    " coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest"
    " FROM outbox WHERE published_at IS NULL"
)
BACKLOG_EVERY_SECONDS = 1.0


class OutboxRelay:
    """Publishes committed outbox rows to JetStream in order, and marks them sent."""

    def __init__(
        self,
        engine: AsyncEngine,
        messaging: Messaging,
        *,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        publish_timeout: float = 5.0,
    ) -> None:
        self._engine = engine
        self._messaging = messaging
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._publish_timeout = publish_timeout
        self._wake = asyncio.Event()
        self._backlog_at = 0.0

    def wake(self) -> None:
        """Called after a commit that wrote outbox rows."""
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled: at every wake-up (a commit) or poll, publish what is pending."""
        await self._messaging.ready.wait()
        backoff = 0.1
        while True:
            self._wake.clear()
            try:
                await self.measure_backlog()
                sent = await self.publish_pending()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("outbox relay: %s; retrying in %.1fs", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if sent < self._batch_size:  # drained: sleep until woken or the next poll
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)

    async def measure_backlog(self, force: bool = False) -> None:
        """Update the backlog gauges (rate-limited: a busy relay loops many times a second)."""
        now = asyncio.get_running_loop().time()
        if not force and now - self._backlog_at < BACKLOG_EVERY_SECONDS:
            return
        self._backlog_at = now
        async with Transaction(self._engine, autocommit=True) as conn:
            row = await conn.fetchrow(_BACKLOG)
        if row is not None:
            metrics.OUTBOX_PENDING.set(row["pending"])
            metrics.OUTBOX_OLDEST_AGE.set(row["oldest"])

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many rows were published and marked.

        The batch goes out in order without waiting between messages (JetStream's async
        publish), then the acks are awaited together: one round trip per batch instead of one
        per row, so the relay keeps up with a busy service (docs/performance.md). Rows are
        marked up to the first that was not acknowledged; that one and the rest are unmarked
        and sent again (a copy JetStream already stored is dropped by its `Nats-Msg-Id`).
        """
        async with Transaction(self._engine) as conn:
            claimed = await conn.fetch(_CLAIM, {"limit": self._batch_size})
            rows = sorted(claimed, key=lambda row: row["seq"])  # RETURNING keeps no order
            if not rows:
                return 0
            acks, failure = await self._send(rows)
            published: list[int] = []
            for row, ack in zip(rows, acks, strict=False):
                problem = _failure_of(ack)
                if problem is not None:
                    failure = failure or problem
                    break
                published.append(row["seq"])
                metrics.OUTBOX_PUBLISHED.labels(row["subject"]).inc()
            if len(published) < len(rows):
                unpublished = [row["seq"] for row in rows[len(published) :]]
                await conn.execute(_UNMARK, {"seqs": unpublished})
        if failure is not None:
            if published:
                log.info("outbox relay published %d before an error", len(published))
            raise failure
        return len(published)

    async def _send(
        self, rows: Sequence[Any]
    ) -> tuple[list[asyncio.Future[Any]], Exception | None]:
        """Send every row in order, then wait (at most the publish timeout) for the acks; the
        futures of the rows sent, and what stopped the sending early, if anything."""
        js = self._messaging.js
        acks: list[asyncio.Future[Any]] = []
        failure: Exception | None = None
        for row in rows:
            try:
                acks.append(
                    await js.publish_async(
                        row["subject"], bytes(row["payload"]), headers=row["headers"]
                    )
                )
            except Exception as error:
                failure = error
                break
        if acks:
            _, late = await asyncio.wait(acks, timeout=self._publish_timeout)
            for ack in late:
                ack.cancel()
        return acks, failure


def _failure_of(ack: asyncio.Future[Any]) -> Exception | None:
    """Why a publish was not acknowledged (None when it was)."""
    if ack.cancelled():
        return TimeoutError("no acknowledgement from JetStream in time")
    error = ack.exception()
    return (
        None
        if error is None
        else Exception(str(error))
        if not isinstance(error, Exception)
        else error
    )
