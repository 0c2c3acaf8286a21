"""Composition root of the Payment service."""

from __future__ import annotations

from services.common.grpc_client import create_channel
from services.common.idempotency import RequestLedger
from services.common.migrator import load_migrations
from services.common.retention import PruneRule, Retention
from services.common.runtime import Runtime, ServiceSpec, Wiring, main
from services.common.security import channel_credentials
from services.payment.adapters.dependencies import GrpcHolds, GrpcOrders
from services.payment.adapters.simulator import SimulatedGateway
from services.payment.adapters.unit_of_work import SqlPaymentUnitOfWork
from services.payment.config import PaymentSettings
from services.payment.entrypoints.events import consumers
from services.payment.entrypoints.grpc_api import PaymentApi
from services.payment.entrypoints.recovery import PendingSettler
from services.payment.service_layer.dependencies import Dependencies
from shop.credit.v1 import credit_service_pb2
from shop.order.v1 import order_service_pb2
from shop.payment.v1 import payment_service_pb2, payment_service_pb2_grpc

SCHEMA = "payments"
SERVICE_NAME = payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name
ORDER_SERVICE = order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name
CREDIT_SERVICE = credit_service_pb2.DESCRIPTOR.services_by_name["CreditService"].full_name

# A PENDING payment older than this is presumed orphaned (a crash between record and
# settle); it leaves room for the gateway's latency and retries.
STALE_AFTER_SECONDS = 10.0
RECOVERY_INTERVAL_SECONDS = 5.0


def prune_rules(retention: Retention) -> list[PruneRule]:
    """Cancelled orders the compensation job has resolved, as long as the inbox keeps their
    events; open ones (resolved_at NULL) stay until resolved."""
    return [PruneRule("cancelled_orders", "resolved_at", retention.inbox_seconds)]


def build_spec(settings: PaymentSettings) -> ServiceSpec:
    def wire(runtime: Runtime) -> Wiring:
        unit_of_work = runtime.units_of_work(SqlPaymentUnitOfWork)
        max_bytes = settings.core.max_message_bytes
        tls = channel_credentials(settings.core.grpc_tls)  # mutual TLS when configured
        deps = Dependencies(
            unit_of_work=unit_of_work,
            gateway=SimulatedGateway(settings.gateway_latency_ms),
            # One channel per dependency, created once: retries UNAVAILABLE by service config.
            orders=GrpcOrders(create_channel(settings.order_target, ORDER_SERVICE, max_bytes, tls)),
            holds=GrpcHolds(create_channel(settings.credit_target, CREDIT_SERVICE, max_bytes, tls)),
            stale_after_seconds=STALE_AFTER_SECONDS + 3 * settings.gateway_latency_ms / 1000,
            gateway_timeout_seconds=settings.gateway_timeout_seconds,
        )
        api = PaymentApi(deps, runtime.pager, RequestLedger(unit_of_work))
        settler = PendingSettler(deps, RECOVERY_INTERVAL_SECONDS)
        return Wiring(
            register=[
                lambda server: payment_service_pb2_grpc.add_PaymentServiceServicer_to_server(
                    api, server
                )
            ],
            service_names=[SERVICE_NAME],
            servicers={SERVICE_NAME: api},
            consumers=consumers(unit_of_work, runtime.messaging),
            background=[settler.run],
            prune=prune_rules(settings.core.retention),
        )

    return ServiceSpec(SCHEMA, load_migrations("services.payment.migrations", "payment"), wire)


def run() -> None:
    main(PaymentSettings.from_env, build_spec)
