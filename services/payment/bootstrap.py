"""Composition root of the Payment service."""

from __future__ import annotations

from services.common.migrator import load_migrations
from services.common.runtime import Runtime, ServiceSpec, Wiring, main
from services.payment.config import PaymentSettings
from shop.payment.v1 import payment_service_pb2, payment_service_pb2_grpc

SCHEMA = "payments"
SERVICE_NAME = payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name


def build_spec(settings: PaymentSettings) -> ServiceSpec:
    def wire(runtime: Runtime) -> Wiring:
        # The saga's payment RPCs arrive with the next milestone; until then the generated
        # base class answers UNIMPLEMENTED.
        api = payment_service_pb2_grpc.PaymentServiceServicer()  # type: ignore[abstract]  # saga issue
        return Wiring(
            register=[
                lambda server: payment_service_pb2_grpc.add_PaymentServiceServicer_to_server(
                    api, server
                )
            ],
            service_names=[SERVICE_NAME],
        )

    return ServiceSpec(SCHEMA, load_migrations("services.payment.migrations", "payment"), wire)


def run() -> None:
    main(PaymentSettings.from_env, build_spec)
