"""Credit settings from the environment; read at start, never at import."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.settings import CoreSettings, Env

DEFAULT_PORT = 50052


@dataclass(frozen=True, slots=True)
class CreditSettings:
    core: CoreSettings
    reservation_ttl_seconds: int
    expiry_sweep_seconds: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CreditSettings:
        env = Env(environ)
        settings = cls(
            core=CoreSettings.read(env, "credit", DEFAULT_PORT),
            reservation_ttl_seconds=env.integer(
                "RESERVATION_TTL_SECONDS", 15 * 60, minimum=1, maximum=7 * 24 * 3600
            ),
            expiry_sweep_seconds=env.number("EXPIRY_SWEEP_SECONDS", 5.0, minimum=0.1),
        )
        env.done()
        return settings
