"""PaymentService over gRPC: call a handler, map to proto. No business rules here; the requests'
field rules are in proto/ (buf.validate), checked before any method here runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from services.common.grpc_client import Deadline
from services.common.idempotency import RequestLedger, fingerprint
from services.common.paging import PageCursor, Pager
from services.common.validation import canonical_id, money, page_size
from services.payment.adapters.proto_mapping import (
    method_from_proto,
    payment_to_proto,
    refund_to_proto,
)
from services.payment.domain.model import Payment
from services.payment.service_layer import dependencies, processing, queries, refunds
from services.payment.service_layer.ports import PaymentUnitOfWork
from shop.payment.v1 import payment_service_pb2, payment_service_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def process_response(payment: Payment) -> payment_service_pb2.ProcessPaymentResponse:
    """A decline is a business outcome: OK, success=false, the payment says why."""
    success = payment.is_charged
    return payment_service_pb2.ProcessPaymentResponse(
        success=success,
        error_message="" if success else f"Payment failed: {payment.error_message}",
        payment=payment_to_proto(payment),
    )


class PaymentApi(payment_service_pb2_grpc.PaymentServiceServicer):
    def __init__(
        self, deps: dependencies.Dependencies, pager: Pager, ledger: RequestLedger
    ) -> None:
        self.deps = deps
        self.pager = pager
        self.ledger = ledger  # on the same database as deps.unit_of_work

    @property
    def unit_of_work(self) -> Callable[[], PaymentUnitOfWork]:
        return self.deps.unit_of_work

    async def ProcessPayment(
        self, request: payment_service_pb2.ProcessPaymentRequest, context: Context
    ) -> payment_service_pb2.ProcessPaymentResponse:
        method = method_from_proto(request.payment_method)
        assert method is not None  # the rules admit defined values only
        request_id = canonical_id(request.request_id)
        command = processing.ProcessPayment(
            order_id=canonical_id(request.order_id),
            customer_id=canonical_id(request.customer_id),
            reservation_id=canonical_id(request.reservation_id),
            amount=money(request.amount),
            method=method,
        )
        deadline = Deadline.after(context.time_remaining())

        async def reads() -> processing.Reads:
            return await processing.read_ahead(self.deps, command, deadline)

        async def work(read: processing.Reads) -> payment_service_pb2.ProcessPaymentResponse:
            payment = await processing.pay(self.deps, command, deadline, read)
            return process_response(payment)

        return await self.ledger.run(
            "ProcessPayment",
            request_id,
            request,
            payment_service_pb2.ProcessPaymentResponse,
            reads,
            work,
        )

    async def GetPayment(
        self, request: payment_service_pb2.GetPaymentRequest, context: Context
    ) -> payment_service_pb2.GetPaymentResponse:
        async with self.unit_of_work().autocommit() as uow:
            payment = await queries.get_payment(uow, canonical_id(request.payment_id))
        return payment_service_pb2.GetPaymentResponse(payment=payment_to_proto(payment))

    async def ListPayments(
        self, request: payment_service_pb2.ListPaymentsRequest, context: Context
    ) -> payment_service_pb2.ListPaymentsResponse:
        order = canonical_id(request.order_id) or None  # the rules: exactly one of the two
        customer = canonical_id(request.customer_id) or None

        async def fetch(after: PageCursor | None, limit: int) -> list[Payment]:
            async with self.unit_of_work().autocommit() as uow:
                return await queries.list_payments(uow, order, customer, after, limit)

        payments, token = await self.pager.serve(
            request.page_token,
            page_size(request.page_size),
            f"order_id={order or ''}&customer_id={customer or ''}",
            fetch,
            lambda payment: payment.payment_id,
            payment_to_proto,
        )
        return payment_service_pb2.ListPaymentsResponse(payments=payments, next_page_token=token)

    async def RefundPayment(
        self, request: payment_service_pb2.RefundPaymentRequest, context: Context
    ) -> payment_service_pb2.RefundPaymentResponse:
        payment_id = canonical_id(request.payment_id)
        amount = money(request.amount) if request.HasField("amount") else None
        request_id = canonical_id(request.request_id)
        operation = "RefundPayment"
        # A finished refund replays its first response (AIP-155) ...
        stored = await self.ledger.replay(operation, request_id, request)
        if stored is not None:
            return payment_service_pb2.RefundPaymentResponse.FromString(stored)
        # ... an unfinished one is found by its request_id (unique on the refund row).
        refund, payment = await refunds.refund_payment(
            self.deps,
            refunds.RefundPayment(
                payment_id=payment_id,
                amount=amount,
                reason=request.reason,
                request_id=request_id,
                fingerprint=fingerprint(request),
            ),
        )
        response = payment_service_pb2.RefundPaymentResponse(
            refund=refund_to_proto(refund), payment=payment_to_proto(payment)
        )
        await self.ledger.remember(operation, request_id, request, response)
        return response
