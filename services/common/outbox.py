"""The outbox relay: publishes committed outbox rows to JetStream, in order, at least once.

`Nats-Msg-Id` = event id, so a row re-sent after a crash (published, its mark not yet
committed) is dropped by JetStream's duplicate window; consumers' inboxes absorb anything
later. While NATS is down the rows simply wait; nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

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
        """Publish one batch; returns how many rows were published and marked."""
        async with Transaction(self._engine) as conn:
            claimed = await conn.fetch(_CLAIM, {"limit": self._batch_size})
            rows = sorted(claimed, key=lambda row: row["seq"])  # RETURNING keeps no order
            if not rows:
                return 0
            published: list[int] = []
            failure: Exception | None = None
            for seq, subject, payload, headers in rows:
                try:
                    await self._messaging.js.publish(
                        subject, bytes(payload), timeout=self._publish_timeout, headers=headers
                    )
                except Exception as error:
                    failure = error  # keep order: stop at the first failure, unmark the rest
                    break
                published.append(seq)
                metrics.OUTBOX_PUBLISHED.labels(subject).inc()
            if failure is not None:
                unpublished = [row["seq"] for row in rows[len(published) :]]
                await conn.execute(_UNMARK, {"seqs": unpublished})
        if failure is not None:
            if published:
                log.info("outbox relay published %d before an error", len(published))
            raise failure
        return len(published)
