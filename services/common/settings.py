"""Settings from the environment, validated at start with one clear message for all problems."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from services.common import eventloop
from services.common.paging import derived_key
from services.common.retention import Retention
from services.common.security_settings import (
    AuthzPolicy,
    GrpcTls,
    NatsSecurity,
    redact_url,
    redact_urls,
)

HTTP_PORTS = {"order": 8051, "credit": 8052, "payment": 8053}


class SettingsError(Exception):
    """Raised with every problem found, so an operator fixes them in one go."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


class Env:
    """Typed reads from an environment mapping; problems are collected, not raised one by one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str:
        """A string setting; a problem is noted when it is required and missing."""
        value = self.environ.get(name, "").strip()
        if value:
            return value
        if default is None:
            self.problems.append(f"{name} is required but not set")
            return ""
        return default

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int = 2**31 - 1
    ) -> int:
        """An integer setting within [minimum, maximum]; a problem is noted otherwise."""
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name} must be an integer, got {raw!r}")
            return default
        if not minimum <= value <= maximum:
            self.problems.append(f"{name} must be between {minimum} and {maximum}, got {value}")
            return default
        return value

    def number(
        self, name: str, default: float, *, minimum: float = 0.0, maximum: float = float("inf")
    ) -> float:
        """A number setting between `minimum` and `maximum`; a problem is noted otherwise."""
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name} must be a number, got {raw!r}")
            return default
        if value < minimum:
            self.problems.append(f"{name} must be at least {minimum}, got {value}")
            return default
        if value > maximum:
            self.problems.append(f"{name} must be at most {maximum}, got {value}")
            return default
        return value

    def origins(self, name: str) -> frozenset[str]:
        """A comma-separated list of web origins (`https://shop.example`), or `*`."""
        raw = self.environ.get(name, "")
        origins = frozenset(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
        for origin in sorted(origins):
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                self.problems.append(
                    f"{name}: {origin!r} is not an origin (scheme://host[:port], or *)"
                )
        return origins

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """One of `choices`; a problem is noted otherwise."""
        value = self.environ.get(name, "").strip() or default
        if value not in choices:
            self.problems.append(f"{name} must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def database_url(self, name: str = "DATABASE_URL") -> str:
        """The database URL for asyncpg; a problem is noted if it is missing or not PostgreSQL."""
        raw = self.text(name)
        if not raw:
            return ""
        scheme = urlsplit(raw).scheme
        if scheme in ("postgresql", "postgres"):
            return "postgresql+asyncpg" + raw[len(scheme) :]
        if scheme == "postgresql+asyncpg":
            return raw
        self.problems.append(
            f"{name} must be a postgresql:// or postgresql+asyncpg:// URL, got scheme {scheme!r}"
        )
        return ""

    def nats_url(self, name: str = "NATS_URL", default: str = "nats://127.0.0.1:4222") -> str:
        """The NATS URL(s); a problem is noted for another scheme."""
        raw = self.text(name, default)
        for server in raw.split(","):
            if urlsplit(server.strip()).scheme not in ("nats", "tls"):
                self.problems.append(
                    f"{name} must be nats:// or tls:// URLs, got {redact_url(server.strip())!r}"
                )
        return raw

    def page_token_key(self, name: str = "PAGE_TOKEN_KEY") -> bytes:
        """The key as bytes; b"" when unset. Short keys are refused (they can be guessed)."""
        raw = self.environ.get(name, "").strip()
        if raw and len(raw) < 32:
            self.problems.append(
                f"{name} must be at least 32 characters (e.g. openssl rand -hex 32)"
            )
        return raw.encode()

    def done(self) -> None:
        """Raise SettingsError naming every problem found, if there is any."""
        if self.problems:
            raise SettingsError(self.problems)


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """What every service needs; services add their own fields next to these."""

    service: str
    host: str
    port: int
    http_port: int
    database_url: str
    nats_url: str
    log_level: str
    log_format: str
    shutdown_grace_seconds: float
    max_message_bytes: int
    db_pool_size: int
    outbox_poll_seconds: float
    # Unsent outbox rows younger than this are left to the process that wrote them
    # (services/common/outbox.py); well inside JetStream's 10-minute duplicate window.
    outbox_sweep_after_seconds: float
    nats_stream_replicas: int
    event_loop: str
    # Deliveries of a failing event before it goes to DEADLETTER (services/common/inbox.py)
    event_max_deliver: int = 5
    # Security (services/common/security_settings.py); all optional, plaintext by default.
    grpc_tls: GrpcTls | None = None
    authz: AuthzPolicy | None = None
    nats_security: NatsSecurity = field(default_factory=NatsSecurity)
    # How long streams, outbox, inbox and request ids keep things (services/common/retention.py)
    retention: Retention = field(default_factory=Retention)
    # HMAC key of page tokens (services/common/paging.py): PAGE_TOKEN_KEY, the same on every
    # replica; unset, derived from the database URL (which every replica shares).
    page_token_key: bytes = b""
    # Origins whose browser pages may call the Connect door (HTTP_CORS_ORIGINS; "*" = any).
    http_cors_origins: frozenset[str] = frozenset()

    def __repr__(self) -> str:  # the URLs without their passwords, never the key
        shown = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name != "page_token_key"
        }
        shown["database_url"] = redact_url(self.database_url)
        shown["nats_url"] = redact_urls(self.nats_url)
        fields = ", ".join(f"{name}={value!r}" for name, value in shown.items())
        return f"CoreSettings({fields}, page_token_key=***)"

    @classmethod
    def read(cls, env: Env, service: str, default_port: int) -> CoreSettings:
        """The core's settings of `service` from the environment."""
        grpc_tls = GrpcTls.read(env)
        database_url = env.database_url()
        return cls(
            service=service,
            host=env.text("GRPC_HOST", "[::]"),
            port=env.integer(f"{service.upper()}_PORT", default_port, minimum=0, maximum=65535),
            # /metrics and /healthz (and the Connect door): 8051, 8052, 8053 beside 5005x
            http_port=env.integer(
                f"{service.upper()}_HTTP_PORT",
                HTTP_PORTS.get(service, 0),
                minimum=0,
                maximum=65535,
            ),
            database_url=database_url,
            nats_url=env.nats_url(),
            log_level=env.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            log_format=env.choice("LOG_FORMAT", "json", ("json", "text")),
            shutdown_grace_seconds=env.number("SHUTDOWN_GRACE_SECONDS", 10.0),
            max_message_bytes=env.integer(
                "GRPC_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, minimum=1024, maximum=64 * 1024 * 1024
            ),
            db_pool_size=env.integer("DB_POOL_SIZE", 10, minimum=1, maximum=200),
            outbox_poll_seconds=env.number("OUTBOX_POLL_SECONDS", 1.0, minimum=0.01),
            outbox_sweep_after_seconds=env.number(
                "OUTBOX_SWEEP_AFTER_SECONDS", 10.0, minimum=0.0, maximum=300.0
            ),
            # copies of each JetStream stream: 3 on a 3-member cluster, 1 on a single server
            nats_stream_replicas=env.integer("JETSTREAM_REPLICAS", 1, minimum=1, maximum=5),
            event_loop=env.choice("EVENT_LOOP", "uvloop", eventloop.CHOICES),
            event_max_deliver=env.integer("EVENT_MAX_DELIVER", 5, minimum=1, maximum=1000),
            grpc_tls=grpc_tls,
            authz=AuthzPolicy.read(env, grpc_tls),
            nats_security=NatsSecurity.read(env),
            retention=Retention.read(env),
            page_token_key=env.page_token_key() or derived_key(database_url),
            http_cors_origins=env.origins("HTTP_CORS_ORIGINS"),
        )
