"""Publishing events by hand onto the subjects, as a confused or hostile producer would."""

from __future__ import annotations

import uuid

import nats
from google.protobuf.message import Message

from services.common.events import envelope


async def publish(
    nats_url: str, event: Message, msg_id: str | None = None, subject: str | None = None
) -> None:
    """Publish `event` with its CloudEvents headers; `msg_id` defaults to a fresh one, so
    JetStream's duplicate window does not drop a copy of an event already sent."""
    env = envelope(event, "/chaos")
    headers = {**env.headers, "Nats-Msg-Id": msg_id or str(uuid.uuid4())}
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        await nc.jetstream(timeout=10).publish(subject or env.subject, env.payload, headers=headers)
    finally:
        await nc.close()


async def publish_raw(nats_url: str, subject: str, payload: bytes, headers: dict[str, str]) -> None:
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        await nc.jetstream(timeout=10).publish(subject, payload, headers=headers)
    finally:
        await nc.close()
