"""Event contract helpers: subjects read from the proto option, CloudEvents headers.

Subjects are part of the contract (`option (shop.common.v1.event_subject)` on each event
message), so nothing here hard-codes one: the registry is derived from the descriptors.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, TypeVar

from google.protobuf.message import Message

from services.common.money import is_known_currency
from shop.common.v1 import event_options_pb2
from shop.credit.v1 import events_pb2 as credit_events
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events

EVENT_MODULES: tuple[ModuleType, ...] = (order_events, credit_events, payment_events)

# One stream per owning service; file storage, see jetstream.ensure_streams.
STREAMS: dict[str, str] = {"ORDERS": "orders.>", "CREDITS": "credits.>", "PAYMENTS": "payments.>"}
# The stream each service publishes to, and the only one it creates and updates (its NATS
# user may touch no other: deploy/k8s/base/nats-auth.conf). Consumers wait for the others.
OWN_STREAM: dict[str, str] = {"order": "ORDERS", "credit": "CREDITS", "payment": "PAYMENTS"}
# Poison events end here (services/common/inbox.py, "Dead letters"), on
# `deadletter.<consumer>.<original subject>`; every service creates and updates it (the same
# configuration from each), since every service's consumers write to it.
DEADLETTER = "DEADLETTER"
DEADLETTER_SUBJECTS = "deadletter.>"


def deadletter_subject(consumer: str, subject: str) -> str:
    """The subject a consumer's dead letter of an event on `subject` is published to.

    Args:
        consumer: the durable consumer that gave up on the event.
        subject: the event's own subject.

    Returns:
        `deadletter.<consumer>.<subject>`.
    """
    return f"deadletter.{consumer}.{subject}"


CONTENT_TYPE = "application/protobuf"

E = TypeVar("E", bound=Message)


def subject_of(descriptor: Any) -> str:  # upb and pure-Python descriptors alike
    """The NATS subject declared on an event message ("" for non-events).

    Args:
        descriptor: an event message's descriptor.

    Returns:
        Its `event_subject` option, or "" when it declares none.
    """
    return str(descriptor.GetOptions().Extensions[event_options_pb2.event_subject])


def _registry() -> dict[str, type[Message]]:
    registry: dict[str, type[Message]] = {}
    for module in EVENT_MODULES:
        for name in module.DESCRIPTOR.message_types_by_name:
            cls: type[Message] = getattr(module, name)
            if subject_of(cls.DESCRIPTOR):
                registry[cls.DESCRIPTOR.full_name] = cls
    return registry


EVENT_TYPES: dict[str, type[Message]] = _registry()
SUBJECT_TYPES: dict[str, type[Message]] = {
    subject_of(cls.DESCRIPTOR): cls for cls in EVENT_TYPES.values()
}


def new_event(cls: type[E], **fields: object) -> E:
    """An event with a fresh UUID and the current time; the rest from `fields`.

    Returns:
        The event, ready to emit.
    """
    # Through Callable: the typeshed stubs of Message declare no keyword constructor.
    build: Callable[..., E] = cls
    event = build(event_id=str(uuid.uuid4()), **fields)
    event.occurred_at.GetCurrentTime()  # type: ignore[attr-defined]
    return event


@dataclass(frozen=True, slots=True)
class Envelope:
    """What goes on the wire: subject, body and CloudEvents binary-mode headers."""

    event_id: str
    subject: str
    event_type: str
    payload: bytes
    headers: dict[str, str]


def envelope(event: Message, source: str) -> Envelope:
    """The event as it goes on the wire: subject, body and CloudEvents headers.

    Args:
        event: an event message (its `event_id` a UUID, its type declaring a subject).
        source: the CloudEvents source, e.g. `/shop/payment`.

    Returns:
        The envelope; `Nats-Msg-Id` is the event id, so JetStream drops a re-publish.
    """
    descriptor = event.DESCRIPTOR
    subject = subject_of(descriptor)
    if not subject:
        raise ValueError(f"{descriptor.full_name} declares no event_subject option")
    event_id: str = event.event_id  # type: ignore[attr-defined]
    uuid.UUID(event_id)  # every event carries a UUID id; fail loudly in the producer if not
    occurred = (
        event.occurred_at.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined]
        if event.HasField("occurred_at")
        else datetime.now(UTC)
    )
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": descriptor.full_name,
        "ce-source": source,
        "ce-time": occurred.isoformat().replace("+00:00", "Z"),
        "content-type": CONTENT_TYPE,
        "Nats-Msg-Id": event_id,
    }
    return Envelope(event_id, subject, descriptor.full_name, event.SerializeToString(), headers)


# Consumers check every event against these before a handler sees it: a well-formed event
# with a bad field can never be applied, however often it is redelivered.
_ID_FIELDS = ("event_id", "order_id", "customer_id", "reservation_id", "payment_id", "refund_id")
_OPTIONAL_IDS = frozenset({"reservation_id"})  # a payment may name no hold (the order's)
_POSITIVE_AMOUNTS = frozenset({"amount", "total"})


def defects(event: Message) -> list[str]:
    """What is wrong with a consumed event's fields, in words; empty when nothing is.

    Ids must be canonical UUIDs (and present, but for `reservation_id`); amounts must be in a
    known ISO 4217 currency and never negative; `amount` and `total` must be positive.

    Args:
        event: the decoded event.

    Returns:
        One sentence per bad field; empty when the event is sound.
    """
    found: list[str] = []
    fields = event.DESCRIPTOR.fields_by_name
    for name in _ID_FIELDS:
        if name not in fields:
            continue
        value: str = getattr(event, name)
        if not value:
            if name not in _OPTIONAL_IDS:
                found.append(f"{name} is missing")
            continue
        try:
            canonical = str(uuid.UUID(value)) == value.lower()
        except ValueError:
            canonical = False
        if not canonical:
            found.append(f"{name} is not a UUID: {value[:64]!r}")
    for name, field in fields.items():
        if field.message_type is None or field.message_type.full_name != "shop.common.v1.Money":
            continue
        if not event.HasField(name):
            if name in _POSITIVE_AMOUNTS:
                found.append(f"{name} is missing")
            continue
        money = getattr(event, name)
        if not is_known_currency(money.currency_code):
            found.append(f"{name} has an unknown currency {money.currency_code[:16]!r}")
        if money.minor_units < 0 or (name in _POSITIVE_AMOUNTS and money.minor_units == 0):
            found.append(f"{name} must be positive, got {money.minor_units}")
    return found
