"""Payment settings from the environment; read at start, never at import."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.settings import CoreSettings, Env

DEFAULT_PORT = 50053


@dataclass(frozen=True, slots=True)
class PaymentSettings:
    core: CoreSettings
    order_target: str
    credit_target: str
    gateway_latency_ms: int
    gateway_timeout_seconds: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PaymentSettings:
        env = Env(environ)
        settings = cls(
            core=CoreSettings.read(env, "payment", DEFAULT_PORT),
            order_target=env.text("ORDER_TARGET", "localhost:50051"),
            credit_target=env.text("CREDIT_TARGET", "localhost:50052"),
            gateway_latency_ms=env.integer("PAYMENT_GATEWAY_LATENCY_MS", 0, maximum=60_000),
            # One gateway call's bound; a charge that times out stays PENDING for recovery.
            gateway_timeout_seconds=env.number(
                "PAYMENT_GATEWAY_TIMEOUT_SECONDS", 10.0, minimum=0.1
            ),
        )
        if settings.gateway_timeout_seconds * 1000 <= settings.gateway_latency_ms:
            env.problems.append(
                "PAYMENT_GATEWAY_TIMEOUT_SECONDS must exceed PAYMENT_GATEWAY_LATENCY_MS "
                "(every charge would time out)"
            )
        env.done()
        return settings
