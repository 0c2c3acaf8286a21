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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PaymentSettings:
        env = Env(environ)
        settings = cls(
            core=CoreSettings.read(env, "payment", DEFAULT_PORT),
            order_target=env.text("ORDER_TARGET", "localhost:50051"),
            credit_target=env.text("CREDIT_TARGET", "localhost:50052"),
            gateway_latency_ms=env.integer("PAYMENT_GATEWAY_LATENCY_MS", 0, maximum=60_000),
        )
        env.done()
        return settings
