"""Composition root of the Credit service."""

from __future__ import annotations

from services.common.migrator import load_migrations
from services.common.retention import PruneRule, Retention
from services.common.runtime import Runtime, ServiceSpec, Wiring, main
from services.credit.adapters.unit_of_work import SqlCreditUnitOfWork
from services.credit.config import CreditSettings
from services.credit.entrypoints.events import ExpirySweeper, consumers
from services.credit.entrypoints.grpc_api import CreditApi
from shop.credit.v1 import credit_service_pb2, credit_service_pb2_grpc

SCHEMA = "credits"
SERVICE_NAME = credit_service_pb2.DESCRIPTOR.services_by_name["CreditService"].full_name


def prune_rules(retention: Retention) -> list[PruneRule]:
    """A cancel noted before its orders.created must outlast that event's redeliveries and
    replays: as long as the inbox, which outlasts the stream."""
    return [PruneRule("cancelled_orders", "cancelled_at", retention.inbox_seconds)]


def build_spec(settings: CreditSettings) -> ServiceSpec:
    def wire(runtime: Runtime) -> Wiring:
        unit_of_work = runtime.units_of_work(SqlCreditUnitOfWork)
        api = CreditApi(unit_of_work, runtime.pager)
        sweeper = ExpirySweeper(unit_of_work, settings.expiry_sweep_seconds)
        return Wiring(
            register=[
                lambda server: credit_service_pb2_grpc.add_CreditServiceServicer_to_server(
                    api, server
                )
            ],
            service_names=[SERVICE_NAME],
            servicers={SERVICE_NAME: api},
            consumers=consumers(unit_of_work, runtime.messaging, settings.reservation_ttl_seconds),
            background=[sweeper.run],
            prune=prune_rules(settings.core.retention),
        )

    return ServiceSpec(SCHEMA, load_migrations("services.credit.migrations", "credit"), wire)


def run() -> None:
    main(CreditSettings.from_env, build_spec)
