"""CreditService over gRPC: validate, call a handler, map to proto. No business rules here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from services.common.idempotency import run_idempotent
from services.common.paging import PageCursor, Pager
from services.common.validation import canonical_id, money, page_size
from services.credit.adapters.proto_mapping import account_to_proto, reservation_to_proto
from services.credit.adapters.unit_of_work import SqlCreditUnitOfWork
from services.credit.domain.reservation import Reservation
from services.credit.service_layer import handlers
from shop.credit.v1 import credit_service_pb2, credit_service_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class CreditApi(credit_service_pb2_grpc.CreditServiceServicer):
    def __init__(self, unit_of_work: Callable[[], SqlCreditUnitOfWork], pager: Pager) -> None:
        self.unit_of_work = unit_of_work
        self.pager = pager

    async def TopUpCredits(
        self, request: credit_service_pb2.TopUpCreditsRequest, context: Context
    ) -> credit_service_pb2.TopUpCreditsResponse:
        customer_id = canonical_id(request.customer_id)
        amount = money(request.amount)
        request_id = canonical_id(request.request_id)

        async def work(uow: SqlCreditUnitOfWork) -> credit_service_pb2.TopUpCreditsResponse:
            account = await handlers.top_up(uow, customer_id, amount, request_id)
            return credit_service_pb2.TopUpCreditsResponse(account=account_to_proto(account))

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
            account = await handlers.get_account(uow, canonical_id(request.customer_id))
        return credit_service_pb2.GetCreditAccountResponse(account=account_to_proto(account))

    async def GetReservation(
        self, request: credit_service_pb2.GetReservationRequest, context: Context
    ) -> credit_service_pb2.GetReservationResponse:
        async with self.unit_of_work().autocommit() as uow:
            hold = await handlers.get_reservation(uow, canonical_id(request.reservation_id))
        return credit_service_pb2.GetReservationResponse(reservation=reservation_to_proto(hold))

    async def ListReservations(
        self, request: credit_service_pb2.ListReservationsRequest, context: Context
    ) -> credit_service_pb2.ListReservationsResponse:
        customer_id = canonical_id(request.customer_id)

        async def fetch(after: PageCursor | None, limit: int) -> list[Reservation]:
            async with self.unit_of_work().autocommit() as uow:
                return await handlers.list_reservations(uow, customer_id, after, limit)

        reservations, token = await self.pager.serve(
            request.page_token,
            page_size(request.page_size),
            f"customer_id={customer_id}",
            fetch,
            lambda hold: hold.reservation_id,
            reservation_to_proto,
        )
        return credit_service_pb2.ListReservationsResponse(
            reservations=reservations, next_page_token=token
        )
