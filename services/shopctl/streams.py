"""What shopctl reads from and writes to JetStream: events decoded by `ce-type`, a scan of
a stream, and the dead letters (list, show, replay, discard)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from services.common.events import DEADLETTER, EVENT_TYPES, STREAMS
from services.common.inbox import (
    DEAD_AT,
    DEAD_CONSUMER,
    DEAD_DELIVERIES,
    DEAD_MSG_ID,
    DEAD_REASON,
    DEAD_SEQUENCE,
    DEAD_STREAM,
)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One message of a stream, decoded when its `ce-type` is a known event."""

    stream: str
    seq: int
    subject: str
    time: datetime  # when JetStream stored it
    headers: dict[str, str]
    data: bytes

    @property
    def event_type(self) -> str:
        return self.headers.get("ce-type", "")

    def decoded(self) -> dict[str, Any] | None:
        """The event's fields (proto JSON names), or None when the body does not decode."""
        cls = EVENT_TYPES.get(self.event_type)
        if cls is None:
            return None
        try:
            return MessageToDict(cls.FromString(self.data), preserving_proto_field_name=True)
        except DecodeError:
            return None

    def as_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "seq": self.seq,
            "subject": self.subject,
            "time": self.time.isoformat(),
            "type": self.event_type,
            "event": self.decoded(),
        }


def stream_of(subject: str) -> str:
    """The stream that holds `subject` (an event subject or a pattern in one stream)."""
    for name, pattern in {**STREAMS, DEADLETTER: "deadletter.>"}.items():
        if subject.split(".", 1)[0] == pattern.split(".", 1)[0]:
            return name
    raise ValueError(f"no stream holds {subject!r} (streams: {', '.join(STREAMS)})")


async def scan(
    js: JetStreamContext,
    stream: str,
    subject: str = ">",
    *,
    since: datetime | None = None,
    follow: bool = False,
    idle_seconds: float = 1.0,
) -> AsyncIterator[StreamEvent]:
    """The stream's messages on `subject` in order, from `since` (or the start; or only new
    ones when following without `since`), until the last one stored now (or forever when
    `follow`). An ordered consumer: ephemeral, nothing acked, nothing changed."""
    info = await js.stream_info(stream)
    last = info.state.last_seq
    if not follow and info.state.messages == 0:
        return
    if since is not None:
        policy, start = DeliverPolicy.BY_START_TIME, since.astimezone(UTC)
    else:
        policy, start = (DeliverPolicy.NEW if follow else DeliverPolicy.ALL), None
    filter_subject = subject if subject != ">" else None
    config = ConsumerConfig(deliver_policy=policy, opt_start_time=_rfc3339(start))
    sub = await js.subscribe(
        filter_subject or f"{stream_subjects(stream)}",
        stream=stream,
        ordered_consumer=True,
        config=config,
        idle_heartbeat=5.0,
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_seconds if not follow else 3600)
            except TimeoutError:
                if follow:
                    continue
                return
            meta = msg.metadata
            yield StreamEvent(
                stream,
                meta.sequence.stream,
                msg.subject,
                meta.timestamp,
                dict(msg.headers or {}),
                msg.data,
            )
            if not follow and meta.sequence.stream >= last:
                return
    finally:
        with contextlib.suppress(Exception):  # the connection may be closing already
            await sub.unsubscribe()


def stream_subjects(stream: str) -> str:
    return {**STREAMS, DEADLETTER: "deadletter.>"}[stream]


def _rfc3339(moment: datetime | None) -> Any:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")


# -- dead letters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    seq: int
    subject: str  # deadletter.<consumer>.<original subject>
    time: datetime
    headers: dict[str, str]
    data: bytes

    @property
    def consumer(self) -> str:
        return self.headers.get(DEAD_CONSUMER) or self.subject.split(".", 2)[1]

    @property
    def original_subject(self) -> str:
        return self.subject.split(".", 2)[2]

    @property
    def reason(self) -> str:
        return self.headers.get(DEAD_REASON, "")

    @property
    def event(self) -> StreamEvent:
        return StreamEvent(
            self.headers.get(DEAD_STREAM, ""),
            int(self.headers.get(DEAD_SEQUENCE, "0") or 0),
            self.original_subject,
            self.time,
            self.headers,
            self.data,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "consumer": self.consumer,
            "subject": self.original_subject,
            "type": self.headers.get("ce-type", ""),
            "event_id": self.headers.get("ce-id", ""),
            "reason": self.reason,
            "deliveries": int(self.headers.get(DEAD_DELIVERIES, "0") or 0),
            "dead_at": self.headers.get(DEAD_AT, ""),
            "from": f"{self.headers.get(DEAD_STREAM, '')}#{self.headers.get(DEAD_SEQUENCE, '')}",
            "headers": self.headers,
            "event": self.event.decoded(),
        }


async def dead_letters(js: JetStreamContext, consumer: str | None = None) -> list[DeadLetter]:
    subject = f"deadletter.{consumer}.>" if consumer else "deadletter.>"
    return [
        DeadLetter(e.seq, e.subject, e.time, e.headers, e.data)
        async for e in scan(js, DEADLETTER, subject)
    ]


async def dead_letter(js: JetStreamContext, seq: int) -> DeadLetter:
    """The dead letter at `seq`; NotFoundError when there is none."""
    raw = await js.get_msg(DEADLETTER, seq)
    if raw.subject is None or raw.seq is None:
        raise NotFoundError
    return DeadLetter(
        raw.seq,
        raw.subject,
        raw.time or datetime.now(UTC),
        dict(raw.headers or {}),
        raw.data or b"",
    )


@dataclass(frozen=True, slots=True)
class Replayed:
    seq: int  # the dead letter's
    subject: str
    stream_seq: int
    msg_id: str
    duplicate: bool  # JetStream dropped it: the original id is still in its duplicate window
    kept: bool


async def replay(
    js: JetStreamContext, seq: int, *, new_id: bool = False, keep: bool = False
) -> Replayed:
    """Publish the dead letter at `seq` to its original subject, as it first was (its own
    headers, the shop-dead-* ones removed, its original Nats-Msg-Id unless `new_id`), then
    delete it from DEADLETTER unless `keep` or the publish was dropped as a duplicate. Every
    consumer of the subject sees it again; the inbox applies it where it was not applied."""
    letter = await dead_letter(js, seq)
    headers = {k: v for k, v in letter.headers.items() if not k.startswith("shop-dead-")}
    headers.pop("Nats-Msg-Id", None)
    original = letter.headers.get(DEAD_MSG_ID) or letter.headers.get("ce-id") or ""
    msg_id = f"replay:{uuid.uuid4()}" if new_id or not original else original
    headers["Nats-Msg-Id"] = msg_id
    ack = await js.publish(letter.original_subject, letter.data, headers=headers, timeout=5)
    duplicate = bool(ack.duplicate)
    kept = keep or duplicate
    if not kept:
        await js.delete_msg(DEADLETTER, seq)
    return Replayed(seq, letter.original_subject, ack.seq, msg_id, duplicate, kept)


async def discard(js: JetStreamContext, seqs: Iterable[int]) -> list[int]:
    """Delete these dead letters; the ones that were there."""
    gone: list[int] = []
    for seq in seqs:
        try:
            await js.delete_msg(DEADLETTER, seq)
        except NotFoundError:
            continue
        gone.append(seq)
    return gone
