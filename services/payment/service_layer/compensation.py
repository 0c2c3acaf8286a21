"""Compensation: a payment that succeeds after its order was cancelled is refunded.

Payment checks that the order is RESERVED and then charges; a cancel (or the hold's expiry)
can land in between. The gateway has taken the money, Order keeps the order CANCELLED (a
terminal state) and Credit captures the amount, so the customer paid for an order they will
not get. Payment makes them whole without anyone having to notice:

1. the `payment-orders` consumer notes every `orders.cancelled` (an effect-free insert, so a
   duplicate, late or forged event can do no harm by itself);
2. the compensation job takes each noted order that has a successful payment, asks Order
   (over gRPC, the source of truth) whether the order really is CANCELLED, and if so records
   a refund of everything left (one per order: the noted row keeps the refund's id, written
   in the refund's own transaction; the refund's request id is random, so no caller can
   claim it first) and settles it through the gateway like any refund. `payments.refunded`
   then gives the credits back in Credit; the order stays CANCELLED.
"""

from __future__ import annotations

import logging
import uuid

from services.payment.domain.model import REFUNDABLE, Payment, Refund
from services.payment.service_layer.ports import PaymentUnitOfWork
from shop.order.v1 import events_pb2 as order_events

log = logging.getLogger(__name__)

REASON = "ORDER_CANCELLED: the order was cancelled before its payment completed"

# Noted orders that nothing was charged for (no payment, or a failed one) are done once no
# payment can still appear: ProcessPayment reads the order (still RESERVED) before it
# records the payment, which takes at most a call timeout; this leaves a wide margin. Without
# it, the open rows of every ordinary cancellation would be scanned forever.
NOTHING_CHARGED_AFTER_SECONDS = 300
# The job's refunds are no RefundPayment call: their (random) request id is never reused, so
# the fingerprint only marks them as the job's.
_FINGERPRINT = b"compensation"


async def note_cancelled_order(uow: PaymentUnitOfWork, event: order_events.OrderCancelled) -> None:
    """The consumer's handler: remember the order; the job decides what, if anything, to do."""
    try:
        order_id = str(uuid.UUID(event.order_id))
    except ValueError:
        log.error("orders.cancelled names no valid order id (%r); ignored", event.order_id[:64])
        return
    await uow.cancelled_orders.note(order_id, event.reason)


async def record_refund(uow: PaymentUnitOfWork, order_id: str) -> tuple[Refund, Payment] | None:
    """Under the payment's row lock, record the refund of what is left of the order's
    payment, once; None when there is nothing left to refund (or it was recorded before)."""
    payments, refunds = uow.payments, uow.refunds
    payment = await payments.for_order(order_id, for_update=True)
    if payment is None or payment.status not in REFUNDABLE:
        return None
    if await uow.cancelled_orders.refund_of(order_id) is not None:
        return None  # another replica's job refunded it first
    left = payment.refundable(await refunds.pending_total(payment.payment_id))
    if not left.is_positive:
        return None  # refunded by hand already
    refund = await refunds.add(
        Refund(
            refund_id=str(uuid.uuid4()),
            payment_id=payment.payment_id,
            amount=left,
            reason=REASON,
            request_id=str(uuid.uuid4()),
        ),
        _FINGERPRINT,
    )
    await uow.cancelled_orders.mark_compensated(order_id, refund.refund_id)
    log.warning(
        "payment %s succeeded after order %s was cancelled: refunding %s",
        payment.payment_id,
        order_id,
        left,
        extra={"order_id": order_id, "payment_id": payment.payment_id},
    )
    return refund, payment
