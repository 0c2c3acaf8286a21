"""CreditService over gRPC: call a handler, map to proto. No business rules here; the requests'
field rules are in proto/ (buf.validate), checked before any method here runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from services.common.idempotency import run_idempotent
from services.common.paging import decode_page_token, next_page_token
from services.common.proto_mapping import amount_to_proto, money_to_proto, timestamp
from services.common.uow import UnitOfWork
from services.common.validation import canonical_id, money, page_size
from services.credit.adapters.repository import StoredAccount
from services.credit.adapters.reservations import StoredReservation
from services.credit.service_layer import handlers
from shop.credit.v1 import credit_pb2, credit_service_pb2, credit_service_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


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


class CreditApi(credit_service_pb2_grpc.CreditServiceServicer):
    def __init__(self, unit_of_work: Callable[[], UnitOfWork]) -> None:
        self.unit_of_work = unit_of_work

    async def TopUpCredits(
        self, request: credit_service_pb2.TopUpCreditsRequest, context: Context
    ) -> credit_service_pb2.TopUpCreditsResponse:
        customer_id = canonical_id(request.customer_id)
        amount = money(request.amount)
        request_id = canonical_id(request.request_id)

        async def work(uow: UnitOfWork) -> credit_service_pb2.TopUpCreditsResponse:
            stored = await handlers.top_up(uow, customer_id, amount, request_id)
            return credit_service_pb2.TopUpCreditsResponse(account=account_to_proto(stored))

        return await run_idempotent(
            self.unit_of_work,
            "TopUpCredits",
            request_id,
            request,
            credit_service_pb2.TopUpCreditsResponse,
            work,
        )

    async def GetCreditAccount(
        self, request: credit_service_pb2.GetCreditAccountRequest, context: Context
    ) -> credit_service_pb2.GetCreditAccountResponse:
        async with self.unit_of_work().autocommit() as uow:
            stored = await handlers.get_account(uow, canonical_id(request.customer_id))
        return credit_service_pb2.GetCreditAccountResponse(account=account_to_proto(stored))

    async def GetReservation(
        self, request: credit_service_pb2.GetReservationRequest, context: Context
    ) -> credit_service_pb2.GetReservationResponse:
        async with self.unit_of_work().autocommit() as uow:
            stored = await handlers.get_reservation(uow, canonical_id(request.reservation_id))
        return credit_service_pb2.GetReservationResponse(reservation=reservation_to_proto(stored))

    async def ListReservations(
        self, request: credit_service_pb2.ListReservationsRequest, context: Context
    ) -> credit_service_pb2.ListReservationsResponse:
        customer_id = canonical_id(request.customer_id)
        size = page_size(request.page_size)
        query = f"customer_id={customer_id}"
        after = decode_page_token(request.page_token, query)
        async with self.unit_of_work().autocommit() as uow:
            rows = await handlers.list_reservations(uow, customer_id, after, size + 1)
        count, token = next_page_token([row.cursor for row in rows], size, query)
        return credit_service_pb2.ListReservationsResponse(
            reservations=[reservation_to_proto(row) for row in rows[:count]],
            next_page_token=token,
        )
