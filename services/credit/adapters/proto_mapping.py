"""Credit's accounts and holds as protobuf messages: the gRPC resources and the events
Credit publishes."""

from __future__ import annotations

from services.common.events import new_event
from services.common.money import Money
from services.common.proto_mapping import amount_to_proto, money_to_proto, timestamp
from services.credit.domain.model import CreditAccount
from services.credit.domain.reservation import Reservation
from shop.credit.v1 import credit_pb2, events_pb2


def account_to_proto(a: CreditAccount) -> credit_pb2.CreditAccount:
    return credit_pb2.CreditAccount(
        customer_id=a.customer_id,
        available=amount_to_proto(a.currency, a.available),
        reserved=amount_to_proto(a.currency, a.reserved),
        spent=amount_to_proto(a.currency, a.spent),
        topped_up=amount_to_proto(a.currency, a.topped_up),
        updated_at=timestamp(a.updated_at),
    )


def reservation_to_proto(r: Reservation) -> credit_pb2.Reservation:
    return credit_pb2.Reservation(
        reservation_id=r.reservation_id,
        customer_id=r.customer_id,
        order_id=r.order_id,
        amount=money_to_proto(r.amount),
        state=credit_pb2.ReservationState.Value(f"RESERVATION_STATE_{r.state.value}"),
        expires_at=timestamp(r.expires_at),
        payment_id=r.payment_id,
        created_at=timestamp(r.created_at),
        updated_at=timestamp(r.updated_at),
        release_reason=r.release_reason,
    )


def credits_topped_up(
    account: CreditAccount, amount: Money, request_id: str
) -> events_pb2.CreditsToppedUp:
    return new_event(
        events_pb2.CreditsToppedUp,
        customer_id=account.customer_id,
        amount=money_to_proto(amount),
        request_id=request_id,
        available=amount_to_proto(account.currency, account.available),
    )


def _hold_fields(hold: Reservation) -> dict[str, object]:
    return {
        "reservation_id": hold.reservation_id,
        "order_id": hold.order_id,
        "customer_id": hold.customer_id,
        "amount": money_to_proto(hold.amount),
    }


def credits_reserved(hold: Reservation) -> events_pb2.CreditsReserved:
    return new_event(
        events_pb2.CreditsReserved, **_hold_fields(hold), expires_at=timestamp(hold.expires_at)
    )


def reservation_failed(
    order_id: str, customer_id: str, amount: Money, reason: str, message: str
) -> events_pb2.CreditReservationFailed:
    return new_event(
        events_pb2.CreditReservationFailed,
        order_id=order_id,
        customer_id=customer_id,
        amount=money_to_proto(amount),
        reason=reason,
        message=message,
    )


def credits_released(hold: Reservation) -> events_pb2.CreditsReleased:
    return new_event(events_pb2.CreditsReleased, **_hold_fields(hold), reason=hold.release_reason)


def credits_captured(hold: Reservation, payment_id: str) -> events_pb2.CreditsCaptured:
    return new_event(events_pb2.CreditsCaptured, **_hold_fields(hold), payment_id=payment_id)


def credits_refunded(
    hold: Reservation, payment_id: str, refund_id: str, given: Money
) -> events_pb2.CreditsRefunded:
    return new_event(
        events_pb2.CreditsRefunded,
        customer_id=hold.customer_id,
        order_id=hold.order_id,
        payment_id=payment_id,
        refund_id=refund_id,
        amount=money_to_proto(given),
    )
