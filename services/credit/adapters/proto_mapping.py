"""Credit's accounts and holds as protobuf messages (the gRPC resources)."""

from __future__ import annotations

from services.common.proto_mapping import amount_to_proto, money_to_proto, timestamp
from services.credit.adapters.repository import StoredAccount
from services.credit.adapters.reservations import StoredReservation
from shop.credit.v1 import credit_pb2


def account_to_proto(stored: StoredAccount) -> credit_pb2.CreditAccount:
    a = stored.account
    return credit_pb2.CreditAccount(
        customer_id=a.customer_id,
        available=amount_to_proto(a.currency, a.available),
        reserved=amount_to_proto(a.currency, a.reserved),
        spent=amount_to_proto(a.currency, a.spent),
        topped_up=amount_to_proto(a.currency, a.topped_up),
        updated_at=timestamp(stored.updated_at),
    )


def reservation_to_proto(stored: StoredReservation) -> credit_pb2.Reservation:
    r = stored.reservation
    return credit_pb2.Reservation(
        reservation_id=r.reservation_id,
        customer_id=r.customer_id,
        order_id=r.order_id,
        amount=money_to_proto(r.amount),
        state=credit_pb2.ReservationState.Value(f"RESERVATION_STATE_{r.state.value}"),
        expires_at=timestamp(r.expires_at),
        payment_id=r.payment_id,
        created_at=timestamp(stored.created_at),
        updated_at=timestamp(stored.updated_at),
        release_reason=r.release_reason,
    )
