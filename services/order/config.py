"""Order settings from the environment; read at start, never at import."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.settings import CoreSettings, Env

DEFAULT_PORT = 50051


@dataclass(frozen=True, slots=True)
class OrderSettings:
    core: CoreSettings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OrderSettings:
        env = Env(environ)
        settings = cls(core=CoreSettings.read(env, "order", DEFAULT_PORT))
        env.done()
        return settings
