"""Payment domain ↔ shop.payment.v1 messages: the gRPC resources and the events."""

from __future__ import annotations

from services.common.events import new_event
from services.common.proto_mapping import amount_to_proto, money_to_proto, timestamp
from services.payment.domain.model import (
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from shop.payment.v1 import events_pb2, payment_pb2

_METHOD_PREFIX = "PAYMENT_METHOD_"


def method_to_proto(method: PaymentMethod) -> payment_pb2.PaymentMethod.ValueType:
    return payment_pb2.PaymentMethod.Value(_METHOD_PREFIX + method.value)


_METHODS_BY_NUMBER: dict[int, PaymentMethod] = {
    int(payment_pb2.PaymentMethod.Value(_METHOD_PREFIX + m.value)): m for m in PaymentMethod
}


def method_from_proto(value: int) -> PaymentMethod | None:
    """UNSPECIFIED means the default (credit card); None for a number we do not know (proto3
    enums are open: a client may send any int32)."""
    if value == payment_pb2.PAYMENT_METHOD_UNSPECIFIED:
        return PaymentMethod.CREDIT_CARD
    return _METHODS_BY_NUMBER.get(value)


def status_to_proto(status: PaymentStatus) -> payment_pb2.PaymentStatus.ValueType:
    return payment_pb2.PaymentStatus.Value(f"PAYMENT_STATUS_{status.value}")


def refund_status_to_proto(status: RefundStatus) -> payment_pb2.RefundStatus.ValueType:
    return payment_pb2.RefundStatus.Value(f"REFUND_STATUS_{status.value}")


def payment_to_proto(p: Payment) -> payment_pb2.Payment:
    return payment_pb2.Payment(
        payment_id=p.payment_id,
        order_id=p.order_id,
        customer_id=p.customer_id,
        reservation_id=p.reservation_id,
        amount=money_to_proto(p.amount),
        payment_method=method_to_proto(p.method),
        status=status_to_proto(p.status),
        error_code=p.error_code,
        error_message=p.error_message,
        failure_reason=p.failure_reason,
        transaction_id=p.transaction_id,
        is_simulated=p.is_simulated,
        simulated_response=p.simulated_response,
        refunded_amount=amount_to_proto(p.amount.currency, p.refunded),
        created_at=timestamp(p.created_at),
        processed_at=timestamp(p.processed_at),
    )


def refund_to_proto(r: Refund) -> payment_pb2.Refund:
    return payment_pb2.Refund(
        refund_id=r.refund_id,
        payment_id=r.payment_id,
        amount=money_to_proto(r.amount),
        reason=r.reason,
        status=refund_status_to_proto(r.status),
        transaction_id=r.transaction_id,
        error_code=r.error_code,
        error_message=r.error_message,
        created_at=timestamp(r.created_at),
        processed_at=timestamp(r.processed_at),
    )


# Events ─────────────────────────────────────────────────────────────────────────────────────


def _payment_fields(p: Payment) -> dict[str, object]:
    return {
        "payment_id": p.payment_id,
        "order_id": p.order_id,
        "customer_id": p.customer_id,
        "reservation_id": p.reservation_id,
        "amount": money_to_proto(p.amount),
        "payment_method": method_to_proto(p.method),
    }


def payment_requested(p: Payment) -> events_pb2.PaymentRequested:
    return new_event(events_pb2.PaymentRequested, **_payment_fields(p))


def payment_succeeded(p: Payment) -> events_pb2.PaymentSucceeded:
    return new_event(
        events_pb2.PaymentSucceeded,
        **_payment_fields(p),
        processed_at=timestamp(p.processed_at),
        transaction_id=p.transaction_id,
        is_simulated=p.is_simulated,
    )


def payment_failed(p: Payment) -> events_pb2.PaymentFailed:
    return new_event(
        events_pb2.PaymentFailed,
        **_payment_fields(p),
        processed_at=timestamp(p.processed_at),
        error_code=p.error_code,
        error_message=p.error_message,
        failure_reason=p.failure_reason,
        is_simulated=p.is_simulated,
    )


def _refund_fields(r: Refund, p: Payment) -> dict[str, object]:
    return {
        "refund_id": r.refund_id,
        "payment_id": p.payment_id,
        "order_id": p.order_id,
        "customer_id": p.customer_id,
        "amount": money_to_proto(r.amount),
        "reason": r.reason,
    }


def refund_requested(r: Refund, p: Payment) -> events_pb2.RefundRequested:
    return new_event(events_pb2.RefundRequested, **_refund_fields(r, p))


def payment_refunded(r: Refund, p: Payment) -> events_pb2.PaymentRefunded:
    return new_event(
        events_pb2.PaymentRefunded,
        **_refund_fields(r, p),
        refunded_total=amount_to_proto(p.amount.currency, p.refunded),
        fully_refunded=p.fully_refunded,
        transaction_id=r.transaction_id,
    )
