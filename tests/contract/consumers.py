"""Consumer-driven contracts: what one service relies on in another's API, written down once.

Each expectation names the provider's RPC, the response fields the consumer reads (with the
type it reads them as), the enum values it compares against by name, and the status codes it
handles. tests/contract/test_consumer_contracts.py verifies every expectation against the
proto/ descriptors and against the real provider server, and runs the consumer's own adapter
against it, so a provider change that breaks a consumer fails CI.

Keep this in step with the consumer's adapter: for Payment, services/payment/adapters/
dependencies.py (what it reads) and services/payment/domain/eligibility.py (the enum names).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

# Field kinds, as a consumer reads them (descriptor type names, lower case).
STRING, INT64, ENUM, MESSAGE = "string", "int64", "enum", "message"


@dataclass(frozen=True, slots=True)
class Reads:
    path: str  # dotted path in the response, e.g. "order.total.minor_units"
    kind: str  # STRING, INT64, ENUM or MESSAGE
    type_name: str = ""  # for ENUM and MESSAGE: the full type name
    values: tuple[str, ...] = ()  # for ENUM: the value names the consumer compares against


@dataclass(frozen=True, slots=True)
class Expectation:
    consumer: str
    provider: str  # the process of the mesh that serves it
    method: str  # full method path, /package.Service/Method
    request_field: str  # the id the consumer sends
    reads: tuple[Reads, ...]
    # Codes the consumer tells apart: OK and NOT_FOUND are answers; any other code is the
    # dependency's failure (Payment answers UNAVAILABLE, never INTERNAL).
    handles: tuple[grpc.StatusCode, ...] = (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)

    @property
    def id(self) -> str:
        return f"{self.consumer}->{self.method.rsplit('.', 1)[-1]}"


PAYMENT_EXPECTS = (
    Expectation(
        consumer="payment",
        provider="order",
        method="/shop.order.v1.OrderService/GetOrder",
        request_field="order_id",
        reads=(
            Reads("order.order_id", STRING),
            Reads("order.customer_id", STRING),
            Reads("order.total", MESSAGE, "shop.common.v1.Money"),
            Reads("order.total.currency_code", STRING),
            Reads("order.total.minor_units", INT64),
            Reads(
                "order.status",
                ENUM,
                "shop.order.v1.OrderStatus",
                ("ORDER_STATUS_RESERVED",),
            ),
            Reads("order.reservation_id", STRING),
        ),
    ),
    Expectation(
        consumer="payment",
        provider="credit",
        method="/shop.credit.v1.CreditService/GetReservation",
        request_field="reservation_id",
        reads=(
            Reads("reservation.reservation_id", STRING),
            Reads("reservation.customer_id", STRING),
            Reads("reservation.order_id", STRING),
            Reads("reservation.amount", MESSAGE, "shop.common.v1.Money"),
            Reads("reservation.amount.currency_code", STRING),
            Reads("reservation.amount.minor_units", INT64),
            Reads(
                "reservation.state",
                ENUM,
                "shop.credit.v1.ReservationState",
                ("RESERVATION_STATE_ACTIVE", "RESERVATION_STATE_EXPIRED"),
            ),
            Reads("reservation.expires_at", MESSAGE, "google.protobuf.Timestamp"),
        ),
    ),
)
