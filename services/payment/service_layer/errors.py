"""Payment's own errors (the domain's are in services/payment/domain)."""

from __future__ import annotations

from services.common.errors import NotFound, Unavailable
from services.payment.domain.model import Payment


class PaymentNotFound(NotFound):
    def __init__(self, payment_id: str) -> None:
        super().__init__(
            f"payment {payment_id} does not exist", "PAYMENT_NOT_FOUND", {"payment_id": payment_id}
        )


class PaymentInProgress(Unavailable):
    """Another call is charging this order and did not finish within our deadline."""

    def __init__(self, payment: Payment) -> None:
        super().__init__(
            f"payment {payment.payment_id} for order {payment.order_id} is still being"
            " processed; retry to get its outcome",
            "PAYMENT_IN_PROGRESS",
            {"payment_id": payment.payment_id, "order_id": payment.order_id},
        )


class GatewayDown(Unavailable):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"the payment gateway is unavailable; the {what} will be completed, retry to see it",
            "GATEWAY_UNAVAILABLE",
        )
