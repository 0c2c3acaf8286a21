"""Idempotent event consumers: the inbox row and the effect commit together; ack after.

A durable JetStream pull consumer delivers each event at least once; the inbox makes the
effect happen exactly once, whatever the redeliveries and duplicates.

Dead letters (DESIGN "Poison events", docs/reliability.md): an event that can never be
applied (undecodable, a `ce-type` not its subject's, a bad field, a handler's PoisonEvent)
is moved at once, and one that keeps failing after `max_deliver` deliveries (EVENT_MAX_DELIVER,
naked with a growing delay in between), to stream DEADLETTER on
`deadletter.<consumer>.<subject>`: body and headers unchanged but `Nats-Msg-Id`, plus the
`shop-dead-*` headers below. Publish first, ack after: the dead letter's own `Nats-Msg-Id`
is made of the consumer and the stream sequence, so a process that dies between the two
steps publishes it again on redelivery and JetStream drops the copy; nothing is lost. A
database that is unreachable is nobody's event's fault: those failures wait, never
dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg

from services.common import metrics, tracing
from services.common.db import is_connection_error
from services.common.events import SUBJECT_TYPES, deadletter_subject, defects, subject_of
from services.common.faults import crash_point
from services.common.jetstream import Messaging, ensure_durable_consumer
from services.common.sql import Sql
from services.common.uow import UnitOfWork

log = logging.getLogger(__name__)

# A handler takes the service's own kind of unit of work (a UnitOfWork with its
# repositories, see services/*/adapters/unit_of_work.py) and the decoded event.
EventHandler = Callable[[Any, Any], Awaitable[None]]

# What became of a consumed event (recorded in one place: Consumer._settled).
Outcome = Literal["applied", "duplicate", "retried", "dead_lettered"]

DEFAULT_MAX_DELIVER = 5
# Headers a dead letter carries besides the original ones.
DEAD_REASON = "shop-dead-reason"  # why, in words (the error; nothing of other customers)
DEAD_DELIVERIES = "shop-dead-deliveries"  # how many times it was delivered to the consumer
DEAD_AT = "shop-dead-at"  # when it was dead-lettered, RFC 3339 UTC
DEAD_CONSUMER = "shop-dead-consumer"  # the durable consumer that gave up on it
DEAD_STREAM = "shop-dead-stream"  # where it came from, and at which sequence
DEAD_SEQUENCE = "shop-dead-sequence"
DEAD_MSG_ID = "shop-dead-msg-id"  # its original Nats-Msg-Id (a replay publishes with it)
_REASON_LIMIT = 512

# The claims of a batch (or of one event) in one statement: the ids that were not yet in the
# inbox come back. A duplicate within the batch is inserted once (DO NOTHING also skips a
# row the same statement inserted), so only its first delivery counts as fresh.
_CLAIM = (
    "INSERT INTO inbox (consumer, event_id, subject)"
    " SELECT :consumer, claimed.event_id, claimed.subject"
    " FROM unnest(CAST(:event_ids AS uuid[]), CAST(:subjects AS text[]))"
    " AS claimed (event_id, subject)"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)


async def claim(conn: Sql, consumer: str, events: Sequence[tuple[str, str]]) -> list[bool]:
    """Record events as applied by `consumer`, in one statement.

    Args:
        conn: the unit of work's connection.
        consumer: the durable consumer's name.
        events: (event id, subject) of each event, in the order they will be applied.

    Returns:
        For each event, True when this claim is its first: False for one applied before, and
        for a second copy of an event earlier in the same call.

    Raises:
        ValueError: an event id is not a UUID.
    """
    event_ids = [str(uuid.UUID(event_id)) for event_id, _ in events]
    rows = await conn.fetch(
        _CLAIM,
        {
            "consumer": consumer,
            "event_ids": event_ids,
            "subjects": [subject for _, subject in events],
        },
    )
    new = {str(row["event_id"]) for row in rows}
    fresh = []
    for event_id in event_ids:
        fresh.append(event_id in new)
        new.discard(event_id)  # a later copy in the same batch is a duplicate
    return fresh


class PoisonEvent(Exception):
    """Raised by a handler for an event that can never be applied: what is wrong is in the
    event itself (it names an account that does not exist, it contradicts the state it
    addresses), not in the moment, so a redelivery cannot help. The consumer takes it off
    the stream instead of retrying it."""


@dataclass(frozen=True, slots=True)
class _Delivery:
    msg: Msg
    event: Message
    event_id: str
    handler: EventHandler


@dataclass
class Consumer:
    """One durable pull consumer on one stream, dispatching events by type to handlers."""

    name: str  # durable name, e.g. "credit-orders"
    stream: str
    handlers: dict[type[Message], EventHandler]
    unit_of_work: Callable[[], UnitOfWork]
    messaging: Messaging
    batch: int = 50
    fetch_timeout: float = 1.0
    # A batch's events are applied in this key's order (a stable sort: one aggregate's events
    # keep theirs). Keyed by the row the handlers lock (Credit: the customer's account), two
    # consumers' batches take their locks in the same order and cannot deadlock: a deadlock
    # costs PostgreSQL's deadlock_timeout (1 s) before one batch is thrown back.
    lock_order: Callable[[Any], str] | None = None
    # Deliveries before a failing event is dead-lettered (EVENT_MAX_DELIVER, set by the
    # runtime), and the back-off between them: retry_seconds doubled at each delivery.
    max_deliver: int = DEFAULT_MAX_DELIVER
    retry_seconds: float = 1.0
    retry_max_seconds: float = 30.0
    _by_type: dict[str, tuple[type[Message], EventHandler]] = field(init=False)

    def __post_init__(self) -> None:
        self._by_type = {cls.DESCRIPTOR.full_name: (cls, h) for cls, h in self.handlers.items()}

    @property
    def subjects(self) -> list[str]:
        """The subjects this consumer's handlers take, sorted."""
        return sorted(subject_of(cls.DESCRIPTOR) for cls in self.handlers)

    async def run(self) -> None:
        """Consume until cancelled, binding again after NATS restarts or loses the subscription."""
        await self.messaging.ready.wait()
        while True:
            try:
                sub = await ensure_durable_consumer(
                    self.messaging.js, self.stream, self.name, self.subjects
                )
                await self._drain(sub)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Includes a NATS restart that lost the pull subscription: bind again.
                log.warning("consumer %s: %s; re-subscribing", self.name, error)
                await asyncio.sleep(1.0)

    async def _drain(self, sub: Any) -> None:
        while True:
            try:
                messages = await sub.fetch(self.batch, timeout=self.fetch_timeout)
            except TimeoutError:
                continue
            await self.handle_batch(messages)

    async def handle_batch(self, messages: list[Msg]) -> None:
        """Apply a fetched batch in one transaction: one connection, BEGIN and COMMIT, and one
        inbox insert for all of them instead of one each (docs/performance.md). Should any
        event of the batch fail, the whole batch rolls back and each is applied on its own,
        so one bad event holds back nobody but itself."""
        deliveries = [d for msg in messages if (d := await self._decode(msg)) is not None]
        if len(deliveries) > 1:
            if self.lock_order is not None:
                key = self.lock_order
                deliveries.sort(key=lambda delivery: key(delivery.event))
            try:
                applied: list[bool] = []
                async with self.unit_of_work() as uow:
                    claimed = await claim(
                        uow.conn, self.name, [(d.event_id, d.msg.subject) for d in deliveries]
                    )
                    for delivery, fresh in zip(deliveries, claimed, strict=True):
                        applied.append(await self._apply(uow, delivery, fresh))
            except Exception as error:
                log.warning(
                    "consumer %s: a batch of %d events failed (%s); applying them one by one",
                    self.name,
                    len(deliveries),
                    error,
                )
            else:
                crash_point("inbox.committed")
                for delivery, fresh in zip(deliveries, applied, strict=True):
                    await delivery.msg.ack()
                    self._settled(delivery.msg, "applied" if fresh else "duplicate")
                return
        for delivery in deliveries:
            await self._apply_alone(delivery)

    async def _decode(self, msg: Msg) -> _Delivery | None:
        """The event and its handler; None (and the message taken off the stream) when it is
        not ours, cannot be decoded or has a bad field: redelivery cannot help.

        The subject alone says what an event is (only its producer may publish on it): a
        `ce-type` header naming another type is poison, never a reason to read the body as
        that type (a PaymentSucceeded body on payments.failed must not count as a success)."""
        headers = msg.headers or {}
        event_type = headers.get("ce-type") or ""
        cls = SUBJECT_TYPES.get(msg.subject)
        entry = self._by_type.get(cls.DESCRIPTOR.full_name) if cls is not None else None
        if entry is None:
            await self._poison(msg, f"no handler for subject {msg.subject}")
            return None
        cls, handler = entry
        if event_type and event_type != cls.DESCRIPTOR.full_name:
            await self._poison(msg, f"ce-type {event_type[:128]!r} is not {msg.subject}'s type")
            return None
        try:
            event = cls.FromString(msg.data)
        except DecodeError as error:
            await self._poison(msg, f"undecodable {cls.DESCRIPTOR.name}: {error}")
            return None
        if problems := defects(event):
            await self._poison(msg, f"bad {cls.DESCRIPTOR.name}: {'; '.join(problems)}")
            return None
        event_id: str = event.event_id  # type: ignore[attr-defined]
        return _Delivery(msg, event, event_id, handler)

    async def _poison(self, msg: Msg, reason: str) -> None:
        """Take an event that can never be applied off the stream, loudly: to DEADLETTER."""
        log.error(
            "consumer %s: poison event on %s, not retried: %s",
            self.name,
            msg.subject,
            reason,
            extra={"consumer": self.name, "subject": msg.subject},
        )
        await self._dead_letter(msg, reason)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        """Publish the event to DEADLETTER, then ack it on its stream. Should the publish
        fail (NATS away), the event is naked and comes back to be dead-lettered later."""
        meta = msg.metadata
        headers = dict(msg.headers or {})
        if (original_id := headers.pop("Nats-Msg-Id", None)) is not None:
            headers[DEAD_MSG_ID] = original_id
        headers |= {
            DEAD_REASON: reason[:_REASON_LIMIT],
            DEAD_DELIVERIES: str(meta.num_delivered),
            DEAD_AT: datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            DEAD_CONSUMER: self.name,
            DEAD_STREAM: meta.stream,
            DEAD_SEQUENCE: str(meta.sequence.stream),
            # The same for every attempt at this delivery: a second publish is a duplicate.
            "Nats-Msg-Id": f"dead:{self.name}:{meta.stream}:{meta.sequence.stream}",
        }
        try:
            await self.messaging.js.publish(
                deadletter_subject(self.name, msg.subject), msg.data, timeout=5, headers=headers
            )
        except Exception as error:
            log.warning(
                "consumer %s: cannot dead-letter %s #%d yet (%s); it will come back",
                self.name,
                meta.stream,
                meta.sequence.stream,
                error,
            )
            await msg.nak(delay=self.retry_delay(meta.num_delivered))
            self._settled(msg, "retried")
            return
        crash_point("inbox.dead_lettered")
        await msg.ack()
        self._settled(msg, "dead_lettered")

    def retry_delay(self, num_delivered: int) -> float:
        """The back-off before the next delivery: doubling with each one, up to a bound."""
        exponent = min(max(num_delivered, 1) - 1, 16)
        return float(min(self.retry_seconds * 2**exponent, self.retry_max_seconds))

    def _settled(self, msg: Msg, outcome: Outcome) -> None:
        """The one place a consumed event's fate is recorded: events_consumed_total, and
        event_lag_seconds (`ce-time` to applied) for an event applied now."""
        metrics.event_consumed(self.name, msg.subject, outcome)
        if outcome == "applied" and (lag := _lag_seconds(msg)) is not None:
            metrics.EVENT_LAG.labels(self.name).observe(lag)
        if outcome == "dead_lettered":
            log.warning(
                "consumer %s: %s dead-lettered",
                self.name,
                msg.subject,
                extra={"consumer": self.name, "subject": msg.subject, "outcome": outcome},
            )

    async def _apply(self, uow: UnitOfWork, delivery: _Delivery, fresh: bool) -> bool:
        """Apply the event if `fresh` (its inbox claim found it not applied before), in a
        consumer span when tracing is on; True when it was applied now."""
        subject = delivery.msg.subject
        with tracing.consumer_span(self.name, subject, delivery.event_id, delivery.msg.headers):
            if fresh:
                await delivery.handler(uow, delivery.event)
                return True
        log.info(
            "consumer %s: %s %s already applied",
            self.name,
            delivery.event.DESCRIPTOR.name,
            delivery.event_id,
        )
        return False

    async def _apply_alone(self, delivery: _Delivery) -> None:
        msg, name = delivery.msg, delivery.event.DESCRIPTOR.name
        try:
            async with self.unit_of_work() as uow:
                [claimed] = await claim(uow.conn, self.name, [(delivery.event_id, msg.subject)])
                fresh = await self._apply(uow, delivery, claimed)
        except PoisonEvent as poison:  # rolled back: not even the inbox row stays
            await self._poison(msg, f"{name} {delivery.event_id}: {poison}")
            return
        except Exception as error:
            # Transient or a bug: redelivered a little later each time, and after
            # max_deliver deliveries dead-lettered, unless the database is away (then it
            # waits for it: an outage must not empty the streams into DEADLETTER).
            delivered = msg.metadata.num_delivered
            log.exception(
                "consumer %s: failed to apply %s %s (delivery %d of %d)",
                self.name,
                name,
                delivery.event_id,
                delivered,
                self.max_deliver,
            )
            if delivered >= self.max_deliver and not is_connection_error(error):
                reason = f"{name} {delivery.event_id}: failed {delivered} times, last with"
                await self._dead_letter(msg, f"{reason} {type(error).__name__}: {error}")
                return
            await msg.nak(delay=self.retry_delay(delivered))
            self._settled(msg, "retried")
            return
        crash_point("inbox.committed")
        await msg.ack()
        self._settled(msg, "applied" if fresh else "duplicate")


def _lag_seconds(msg: Msg) -> float | None:
    """Seconds since the event's `ce-time` (None without a readable one)."""
    raw = (msg.headers or {}).get("ce-time")
    if not raw:
        return None
    try:
        occurred = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, time.time() - occurred.timestamp())
