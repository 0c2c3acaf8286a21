"""Order settings from the environment; read at start, never at import."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.settings import CoreSettings, Env

DEFAULT_PORT = 50051
DEFAULT_WATCH_MAX_STREAMS = 1000
DEFAULT_WATCH_MAX_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class OrderSettings:
    core: CoreSettings
    # WatchOrder: open streams per process (RESOURCE_EXHAUSTED beyond), and the longest a
    # stream lasts when its deadline is later or unset (it then ends OK; watch again).
    watch_max_streams: int = DEFAULT_WATCH_MAX_STREAMS
    watch_max_seconds: float = DEFAULT_WATCH_MAX_SECONDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OrderSettings:
        env = Env(environ)
        settings = cls(
            core=CoreSettings.read(env, "order", DEFAULT_PORT),
            watch_max_streams=env.integer(
                "WATCH_MAX_STREAMS", DEFAULT_WATCH_MAX_STREAMS, minimum=1, maximum=100_000
            ),
            watch_max_seconds=env.number(
                "WATCH_MAX_SECONDS", DEFAULT_WATCH_MAX_SECONDS, minimum=0.1
            ),
        )
        env.done()
        return settings
