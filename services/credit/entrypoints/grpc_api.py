"""CreditService over gRPC: validate, call a handler, map to proto. No business rules here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from services.common.idempotency import run_idempotent
from services.common.paging import PageCursor, Pager
from services.common.validation import canonical_id, money, page_size
from services.credit.adapters.proto_mapping import account_to_proto, reservation_to_proto
from services.credit.adapters.reservations import StoredReservation
from services.credit.adapters.unit_of_work import SqlCreditUnitOfWork
from services.credit.service_layer import handlers
from shop.credit.v1 import credit_service_pb2, credit_service_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def _cursor(stored: StoredReservation) -> PageCursor:
    return stored.cursor


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
        after = self.pager.decode(request.page_token, query)
        async with self.unit_of_work().autocommit() as uow:
            rows = await handlers.list_reservations(uow, customer_id, after, size + 1)
        reservations, token = self.pager.page(rows, size, query, _cursor, reservation_to_proto)
        return credit_service_pb2.ListReservationsResponse(
            reservations=reservations, next_page_token=token
        )
