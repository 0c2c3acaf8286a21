"""PaymentService over gRPC: validate, call a handler, map to proto. No business rules here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from services.common.grpc_client import Deadline
from services.common.idempotency import RequestLedger, fingerprint
from services.common.paging import Pager
from services.common.validation import Validator
from services.payment.adapters.proto_mapping import (
    method_from_proto,
    payment_to_proto,
    refund_to_proto,
)
from services.payment.adapters.repository import cursor_of
from services.payment.adapters.unit_of_work import SqlPaymentUnitOfWork
from services.payment.domain.model import Payment
from services.payment.service_layer import dependencies, processing, queries, refunds
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
    def __init__(self, deps: dependencies.Dependencies, pager: Pager) -> None:
        self.deps = deps
        self.pager = pager
        self.ledger = RequestLedger(deps.unit_of_work)

    @property
    def unit_of_work(self) -> Callable[[], SqlPaymentUnitOfWork]:
        return self.deps.unit_of_work

    async def ProcessPayment(
        self, request: payment_service_pb2.ProcessPaymentRequest, context: Context
    ) -> payment_service_pb2.ProcessPaymentResponse:
        v = Validator()
        order_id = v.uuid("order_id", request.order_id)
        customer_id = v.uuid("customer_id", request.customer_id)
        reservation_id = v.uuid("reservation_id", request.reservation_id, required=False)
        amount = v.money("amount", request.amount if request.HasField("amount") else None)
        method = method_from_proto(request.payment_method)
        if method is None:
            v.add("payment_method", f"unknown payment method {request.payment_method}")
        request_id = v.uuid("request_id", request.request_id)
        v.check()
        assert order_id
        assert customer_id
        assert amount
        assert method
        assert request_id
        command = processing.ProcessPayment(
            order_id=str(order_id),
            customer_id=str(customer_id),
            reservation_id=str(reservation_id) if reservation_id else "",
            amount=amount,
            method=method,
        )
        deadline = Deadline.after(context.time_remaining())

        async def work() -> payment_service_pb2.ProcessPaymentResponse:
            payment = await processing.process_payment(self.deps, command, deadline)
            return process_response(payment)

        return await self.ledger.run(
            "ProcessPayment",
            str(request_id),
            request,
            payment_service_pb2.ProcessPaymentResponse,
            work,
        )

    async def GetPayment(
        self, request: payment_service_pb2.GetPaymentRequest, context: Context
    ) -> payment_service_pb2.GetPaymentResponse:
        v = Validator()
        payment_id = v.uuid("payment_id", request.payment_id)
        v.check()
        async with self.unit_of_work().autocommit() as uow:
            payment = await queries.get_payment(uow, str(payment_id))
        return payment_service_pb2.GetPaymentResponse(payment=payment_to_proto(payment))

    async def ListPayments(
        self, request: payment_service_pb2.ListPaymentsRequest, context: Context
    ) -> payment_service_pb2.ListPaymentsResponse:
        v = Validator()
        order_id = v.uuid("order_id", request.order_id, required=False)
        customer_id = v.uuid("customer_id", request.customer_id, required=False)
        if not request.order_id and not request.customer_id:
            v.add("order_id", "order_id or customer_id is required")
            v.add("customer_id", "order_id or customer_id is required")
        page_size = v.page_size("page_size", request.page_size)
        v.check()
        order = str(order_id) if order_id else None
        customer = str(customer_id) if customer_id else None
        query = f"order_id={order or ''}&customer_id={customer or ''}"
        after = self.pager.decode(request.page_token, query)
        async with self.unit_of_work().autocommit() as uow:
            rows = await queries.list_payments(uow, order, customer, after, page_size + 1)
        payments, token = self.pager.page(rows, page_size, query, cursor_of, payment_to_proto)
        return payment_service_pb2.ListPaymentsResponse(payments=payments, next_page_token=token)

    async def RefundPayment(
        self, request: payment_service_pb2.RefundPaymentRequest, context: Context
    ) -> payment_service_pb2.RefundPaymentResponse:
        v = Validator()
        payment_id = v.uuid("payment_id", request.payment_id)
        amount = v.money("amount", request.amount) if request.HasField("amount") else None
        if len(request.reason) > 1000:
            v.add("reason", "must be at most 1000 characters")
        elif "\x00" in request.reason:  # PostgreSQL text cannot hold it
            v.add("reason", "must not contain NUL characters")
        request_id = v.uuid("request_id", request.request_id)
        v.check()
        assert payment_id
        assert request_id
        operation = "RefundPayment"
        # A finished refund replays its first response (AIP-155) ...
        stored = await self.ledger.replay(operation, str(request_id), request)
        if stored is not None:
            return payment_service_pb2.RefundPaymentResponse.FromString(stored)
        # ... an unfinished one is found by its request_id (unique on the refund row).
        refund, payment = await refunds.refund_payment(
            self.deps,
            refunds.RefundPayment(
                payment_id=str(payment_id),
                amount=amount,
                reason=request.reason,
                request_id=str(request_id),
                fingerprint=fingerprint(request),
            ),
        )
        response = payment_service_pb2.RefundPaymentResponse(
            refund=refund_to_proto(refund), payment=payment_to_proto(payment)
        )
        await self.ledger.remember(operation, str(request_id), request, response)
        return response
