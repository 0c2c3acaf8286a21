"""Composition root of the Order service."""

from __future__ import annotations

from services.common.migrator import load_migrations
from services.common.runtime import Runtime, ServiceSpec, Wiring, main
from services.order.adapters.status_feed import StatusFeed
from services.order.adapters.unit_of_work import SqlOrderUnitOfWork
from services.order.config import OrderSettings
from services.order.entrypoints.events import consumers
from services.order.entrypoints.grpc_api import OrderApi
from shop.order.v1 import order_service_pb2, order_service_pb2_grpc

SCHEMA = "orders"
SERVICE_NAME = order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


def build_spec(settings: OrderSettings) -> ServiceSpec:
    def wire(runtime: Runtime) -> Wiring:
        unit_of_work = runtime.units_of_work(SqlOrderUnitOfWork)
        feed = StatusFeed(runtime.engine, settings.watch_max_streams)
        api = OrderApi(unit_of_work, runtime.pager, feed, settings.watch_max_seconds)
        return Wiring(
            register=[
                lambda server: order_service_pb2_grpc.add_OrderServiceServicer_to_server(
                    api, server
                )
            ],
            service_names=[SERVICE_NAME],
            servicers={SERVICE_NAME: api},
            consumers=consumers(unit_of_work, runtime.messaging),
            background=[feed.run],
        )

    return ServiceSpec(SCHEMA, load_migrations("services.order.migrations", "order"), wire)


def run() -> None:
    main(OrderSettings.from_env, build_spec)
