"""The outbox relay: publishes committed outbox rows to JetStream, at least once.

Two paths, one task:

- **Just committed**: a unit of work hands the rows it committed to `committed()`, and the
  relay publishes them at once, in commit order, then marks them sent by their event ids,
  those of every batch acknowledged in the last 0.1 s in one statement. No query finds them
  and no transaction holds them: far fewer round trips than a claim per batch (BEGIN,
  UPDATE … RETURNING, COMMIT), and no wait for the next pass.
- **The sweep**: every `poll_seconds`, rows still unsent `sweep_after_seconds` after they
  were written (their process died before publishing them, NATS was away, an ack never
  came, another replica wrote them and stopped) are claimed, locked, published and marked
  in one transaction; a crash before its COMMIT leaves them unsent.

`Nats-Msg-Id` = event id, so a row published twice (published, then swept before its mark
committed; or by two replicas) is dropped by JetStream's duplicate window, far longer than
`sweep_after_seconds`; consumers' inboxes absorb anything later. While NATS is down the rows
simply wait; nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import metrics
from services.common.jetstream import Messaging
from services.common.sql import Transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event as its outbox row holds it."""

    event_id: str
    subject: str
    event_type: str
    payload: bytes
    headers: dict[str, str]  # CloudEvents headers, Nats-Msg-Id and the traceparent, if any

    def params(self) -> dict[str, Any]:
        """The row's INSERT parameters (headers as JSON text for the jsonb column)."""
        return {
            "event_id": self.event_id,
            "subject": self.subject,
            "event_type": self.event_type,
            "payload": self.payload,
            "headers": json.dumps(self.headers),
        }


# The sweep claims and marks in one statement: the rows are locked (other relays skip them)
# and marked inside the transaction that publishes them, so a crash before COMMIT leaves
# them unmarked. Only rows older than the sweep's delay: the fresh ones are being published
# by the process that wrote them.
_CLAIM = (
    "UPDATE outbox SET published_at = now() WHERE seq IN ("
    "SELECT seq FROM outbox WHERE published_at IS NULL"
    " AND created_at < now() - make_interval(secs => :after)"
    " ORDER BY seq LIMIT :limit FOR UPDATE SKIP LOCKED"
    ") RETURNING seq, event_id, subject, event_type, payload, headers"
)
_UNMARK = "UPDATE outbox SET published_at = NULL WHERE seq = ANY(:seqs)"
# Just-committed rows, once JetStream has them: by event id (the unit of work never learns
# the seq), each with the time its ack came. A row the sweep marked meanwhile is left as is.
_MARK_SENT = (
    "UPDATE outbox SET published_at = sent.at"
    " FROM unnest(CAST(:event_ids AS uuid[]), CAST(:ats AS timestamptz[])) AS sent (event_id, at)"
    " WHERE outbox.event_id = sent.event_id AND outbox.published_at IS NULL"
)
# Marks wait this long to be written together: one statement for a busy relay's many small
# batches. A mark only keeps the sweep from sending the row again (a copy JetStream drops).
MARK_EVERY_SECONDS = 0.1
# The backlog, by the partial index of unpublished rows (outbox_pending_events and
# outbox_oldest_pending_age_seconds), at most once a second.
_BACKLOG = (
    "SELECT count(*) AS pending,"
    " coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest"
    " FROM outbox WHERE published_at IS NULL"
)
BACKLOG_EVERY_SECONDS = 1.0


class OutboxRelay:
    """Publishes committed outbox rows to JetStream, and marks them sent."""

    def __init__(
        self,
        engine: AsyncEngine,
        messaging: Messaging,
        *,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        publish_timeout: float = 5.0,
        sweep_after_seconds: float = 10.0,
    ) -> None:
        self._engine = engine
        self._messaging = messaging
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._publish_timeout = publish_timeout
        # Longer than a publish can take (its timeout), far shorter than JetStream's
        # duplicate window: a row the sweep sends again is still recognised as a copy.
        self._sweep_after = max(sweep_after_seconds, 0.0)
        self._committed: list[OutboxRow] = []
        self._sent: list[tuple[str, datetime]] = []  # published, not yet marked: (id, when)
        self._mark_due = 0.0
        self._wake = asyncio.Event()
        self._backlog_at = 0.0

    def committed(self, rows: Sequence[OutboxRow]) -> None:
        """Called after a commit that wrote outbox rows: publish them now.

        Args:
            rows: the rows the commit wrote, in order.
        """
        # Bounded: while NATS is away, what does not fit waits for the sweep (it is stored).
        room = self._batch_size * 5 - len(self._committed)
        self._committed.extend(rows[: max(room, 0)])
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled: what was just committed at once, the rest at every poll."""
        await self._messaging.ready.wait()
        try:
            await self._relay()
        except asyncio.CancelledError:  # stopping: write the marks that are due later
            if self._sent:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.mark_sent(), timeout=1.0)
            raise

    async def _relay(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.1
        next_sweep = 0.0
        while True:
            self._wake.clear()
            try:
                if self._committed:
                    await self.publish_committed()
                if self._sent and (
                    len(self._sent) >= self._batch_size or loop.time() >= self._mark_due
                ):
                    await self.mark_sent()
                if loop.time() >= next_sweep:
                    await self.measure_backlog()
                    swept = await self.publish_pending()
                    # a full batch: more are waiting, so sweep again at once
                    full = swept >= self._batch_size
                    next_sweep = loop.time() + (0.0 if full else self._poll_seconds)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("outbox relay: %s; retrying in %.1fs", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not self._committed:  # sleep until a commit, the marks or the next sweep
                until = min(next_sweep, self._mark_due) if self._sent else next_sweep
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(until - loop.time(), 0))

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

    async def publish_committed(self) -> int:
        """Publish the rows handed over by `committed`, in order. Those JetStream
        acknowledged, up to the first it did not, are marked sent by the next `mark_sent`;
        that one and the rest are left to the sweep. Returns how many were published."""
        rows = self._committed[: self._batch_size]
        del self._committed[: self._batch_size]
        published, failure = await self._publish(rows)
        if published:
            if not self._sent:
                self._mark_due = asyncio.get_running_loop().time() + MARK_EVERY_SECONDS
            at = datetime.now(UTC)
            self._sent.extend((row.event_id, at) for row in rows[:published])
        if failure is not None:
            log.info(
                "outbox relay: %d just-committed events left for the sweep (%s)",
                len(rows) - published,
                failure,
            )
        return published

    async def mark_sent(self) -> int:
        """Mark the rows `publish_committed` published, in one statement; returns how many
        it had to mark (a row the sweep marked meanwhile keeps its mark)."""
        sent = self._sent[:]
        if not sent:
            return 0
        async with Transaction(self._engine, autocommit=True) as conn:
            await conn.execute(
                _MARK_SENT,
                {"event_ids": [event_id for event_id, _ in sent], "ats": [at for _, at in sent]},
            )
        del self._sent[: len(sent)]
        return len(sent)

    async def publish_pending(self) -> int:
        """Sweep one batch of rows left unsent; returns how many were published and marked.

        The batch goes out in order without waiting between messages (JetStream's async
        publish), then the acks are awaited together: one round trip per batch instead of one
        per row, so the relay keeps up with a busy service (docs/performance.md). Rows are
        marked up to the first that was not acknowledged; that one and the rest are unmarked
        and sent again (a copy JetStream already stored is dropped by its `Nats-Msg-Id`).
        """
        async with Transaction(self._engine) as conn:
            claimed = await conn.fetch(
                _CLAIM, {"limit": self._batch_size, "after": self._sweep_after}
            )
            records = sorted(claimed, key=lambda row: row["seq"])  # RETURNING keeps no order
            if not records:
                return 0
            published, failure = await self._publish([_row_of(record) for record in records])
            if published < len(records):
                unpublished = [record["seq"] for record in records[published:]]
                await conn.execute(_UNMARK, {"seqs": unpublished})
        if failure is not None:
            if published:
                log.info("outbox relay published %d before an error", published)
            raise failure
        return published

    async def _publish(self, rows: Sequence[OutboxRow]) -> tuple[int, Exception | None]:
        """Send every row in order, then wait (at most the publish timeout) for the acks
        together. Returns how many rows, from the first, JetStream acknowledged (each counted
        in outbox_published_total), and why the next one was not (None when all were)."""
        js = self._messaging.js
        acks: list[asyncio.Future[Any]] = []
        failure: Exception | None = None
        for row in rows:
            try:
                acks.append(await js.publish_async(row.subject, row.payload, headers=row.headers))
            except Exception as error:
                failure = error  # not sent: it and the rows after it
                break
        if acks:
            _, late = await asyncio.wait(acks, timeout=self._publish_timeout)
            for ack in late:
                ack.cancel()
        published = len(acks)
        for i, ack in enumerate(acks):
            if (problem := _failure_of(ack)) is not None:
                published, failure = i, problem
                break
        for row in rows[:published]:
            metrics.OUTBOX_PUBLISHED.labels(row.subject).inc()
        return published, failure


def _row_of(record: Any) -> OutboxRow:
    """A claimed outbox row (the sweep's RETURNING) as the relay publishes it."""
    return OutboxRow(
        str(record["event_id"]),
        record["subject"],
        record["event_type"],
        bytes(record["payload"]),
        record["headers"],
    )


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
