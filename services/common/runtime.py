"""The shared process lifecycle of every service: settings → logs → migrations → NATS,
relay and consumers → gRPC server SERVING; SIGTERM → NOT_SERVING → stop(grace) → close.
SIGUSR1 (the pod's preStop) → NOT_SERVING while still serving, until SIGTERM. The SIGUSR1
handler is installed first thing in `main()` (its default action kills the process): a pod
deleted while it starts is drained, never SERVING, instead of dying mid-migration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import eventloop, metrics, tracing
from services.common.connect import ConnectDoor, ConnectOptions
from services.common.db import create_engine, is_connection_error
from services.common.events import DEADLETTER, OWN_STREAM
from services.common.grpc_server import GrpcServer, create_server
from services.common.http import HttpApp, HttpServer
from services.common.inbox import Consumer
from services.common.jetstream import Messaging
from services.common.logs import configure_logging
from services.common.migrator import Migration, core_migrations, migrate
from services.common.outbox import OutboxRelay
from services.common.paging import Pager
from services.common.retention import Pruner, PruneRule, core_rules
from services.common.security import AuthorizationInterceptor, server_credentials
from services.common.settings import CoreSettings, SettingsError
from services.common.uow import UnitOfWork

log = logging.getLogger(__name__)

U = TypeVar("U", bound=UnitOfWork)

MIGRATION_WAIT_SECONDS = 60.0

# SIGUSR1 before the event loop's handler is installed (set by main()'s signal handler).
_EARLY_DRAIN = threading.Event()


def _drain_before_loop(signum: int, frame: object) -> None:
    _EARLY_DRAIN.set()


@dataclass
class Runtime:
    """What a service's composition root gets to build its handlers from."""

    settings: CoreSettings
    engine: AsyncEngine
    messaging: Messaging
    relay: OutboxRelay

    @property
    def source(self) -> str:
        """The service's CloudEvents source, e.g. `/shop/credit`."""
        return f"/shop/{self.settings.service}"

    def unit_of_work(self) -> UnitOfWork:
        """A plain unit of work of the service (no repositories)."""
        return UnitOfWork(self.engine, self.source, self.relay.committed)

    def units_of_work(self, kind: type[U]) -> Callable[[], U]:
        """A factory of the service's own kind of unit of work (with its repositories)."""
        return lambda: kind(self.engine, self.source, self.relay.committed)

    @property
    def pager(self) -> Pager:
        """The service's page-token signer and page cutter."""
        return Pager(self.settings.page_token_key, self.settings.max_message_bytes)


@dataclass
class Wiring:
    """What a service plugs into the runtime."""

    register: Sequence[Callable[[grpc.aio.Server], None]]
    service_names: Sequence[str]
    # Full service name → the servicer the gRPC server calls, served over Connect as well
    # (services/common/connect.py) on the HTTP port.
    servicers: Mapping[str, object] = field(default_factory=dict)
    consumers: Sequence[Consumer] = ()
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # The service's own tables to prune, besides the shared outbox, inbox and request ids.
    prune: Sequence[PruneRule] = ()


@dataclass(frozen=True)
class ServiceSpec:
    """What a service brings to the runtime: its schema, migrations and wiring."""

    schema: str
    migrations: Sequence[Migration]
    wire: Callable[[Runtime], Wiring]

    def all_migrations(self) -> list[Migration]:
        """The core's migrations, then the service's own."""
        return [*core_migrations(), *self.migrations]


async def apply_migrations(engine: AsyncEngine, spec: ServiceSpec) -> None:
    """Migrate, waiting for a database that is still starting (containers start together).

    Args:
        engine: the service's engine.
        spec: the service's schema and migrations.
    """
    deadline = asyncio.get_running_loop().time() + MIGRATION_WAIT_SECONDS
    while True:
        try:
            applied = await migrate(engine, spec.schema, spec.all_migrations())
            log.info(
                "schema %s is up to date (%d migrations applied now)", spec.schema, len(applied)
            )
            return
        except Exception as error:
            if not is_connection_error(error) or asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("database not reachable yet (%s); retrying", type(error).__name__)
            await asyncio.sleep(1.0)


async def serve(settings: CoreSettings, spec: ServiceSpec) -> None:
    """Run the service until SIGTERM: migrate, serve gRPC and HTTP, relay, consume.

    Args:
        settings: the core's settings.
        spec: the service's schema, migrations and wiring.
    """
    tracing.setup(settings.service)  # only when an OTEL_* variable configures an exporter
    engine = create_engine(settings.database_url, spec.schema, pool_size=settings.db_pool_size)
    pool_metrics = metrics.register_pool(engine.pool)
    messaging = Messaging(
        settings.nats_url,
        name=f"shop-{settings.service}",
        security=settings.nats_security,
        replicas=settings.nats_stream_replicas,
        retention=settings.retention,
        # Only its own and the dead letters' (every service's consumers write there): its
        # NATS user may create no other (the consumers wait for theirs).
        streams=[OWN_STREAM[settings.service], DEADLETTER],
    )
    tasks: list[asyncio.Task[None]] = []
    server: GrpcServer | None = None
    http: HttpServer | None = None
    draining = False
    loop = asyncio.get_running_loop()

    def drain() -> None:  # the pod's preStop (docs/deploy.md): NOT_SERVING, still serving
        nonlocal draining
        draining = True
        if server is None:
            log.info("drain requested while starting: the service will not turn SERVING")
            return
        log.info("draining: health NOT_SERVING; calls are still served until SIGTERM")
        tasks.append(asyncio.create_task(server.health.enter_graceful_shutdown()))

    loop.add_signal_handler(signal.SIGUSR1, drain)
    if _EARLY_DRAIN.is_set():
        drain()
    try:
        await apply_migrations(engine, spec)
        relay = OutboxRelay(
            engine,
            messaging,
            poll_seconds=settings.outbox_poll_seconds,
            sweep_after_seconds=settings.outbox_sweep_after_seconds,
        )
        runtime = Runtime(settings, engine, messaging, relay)
        wiring = spec.wire(runtime)
        for consumer in wiring.consumers:
            consumer.max_deliver = settings.event_max_deliver
        server = await create_server(
            f"{settings.host}:{settings.port}",
            wiring.register,
            wiring.service_names,
            max_message_bytes=settings.max_message_bytes,
            credentials=server_credentials(settings.grpc_tls) if settings.grpc_tls else None,
            interceptors=[AuthorizationInterceptor(settings.authz)] if settings.authz else [],
        )
        door = ConnectDoor(
            wiring.servicers,
            ConnectOptions(
                max_message_bytes=settings.max_message_bytes,
                authz=settings.authz,
                cors_origins=settings.http_cors_origins,
            ),
        )
        http = HttpServer(
            settings.host,
            settings.http_port,
            HttpApp(_serving(server), door),
            tls=settings.grpc_tls,
        )
        await http.start()
        jobs: list[Coroutine[Any, Any, None]] = [messaging.connect(), relay.run()]
        jobs += [consumer.run() for consumer in wiring.consumers]
        jobs += [job() for job in wiring.background]
        jobs.append(Pruner(engine, [*core_rules(settings.retention), *wiring.prune]).run())
        tasks += [asyncio.create_task(job) for job in jobs]
        for task in tasks:
            task.add_done_callback(_log_crash)

        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        if draining:  # asked to drain while starting: stay NOT_SERVING until SIGTERM
            tasks.append(asyncio.create_task(server.health.enter_graceful_shutdown()))
        else:
            await server.set_serving(True)
            log.info(
                "%s service SERVING on port %d (HTTP: Connect, /metrics, /healthz on port %d)",
                settings.service,
                server.port,
                http.port,
                extra={
                    "port": server.port,
                    "http_port": http.port,
                    "services": list(wiring.service_names),
                },
            )
        await stop.wait()
        log.info(
            "shutting down: NOT_SERVING, then up to %.0fs for in-flight calls",
            settings.shutdown_grace_seconds,
        )
        await server.stop(settings.shutdown_grace_seconds)
    finally:
        if http is not None:
            await http.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await messaging.close()
        await engine.dispose()
        metrics.unregister(pool_metrics)
        tracing.shutdown()  # flush the spans still buffered
        log.info("%s service stopped", settings.service)


async def migrate_only(settings: CoreSettings, spec: ServiceSpec) -> None:
    """Apply the migrations and stop (the Kubernetes migration Job).

    Args:
        settings: the core's settings.
        spec: the service's schema and migrations.
    """
    engine = create_engine(settings.database_url, spec.schema, pool_size=1)
    try:
        await apply_migrations(engine, spec)
    finally:
        await engine.dispose()


def _serving(server: GrpcServer) -> Callable[[], Coroutine[Any, Any, bool]]:
    """/healthz: the gRPC health of "" (the whole server), as a probe would see it."""
    request = health_pb2.HealthCheckRequest(service="")

    async def serving() -> bool:
        response = await server.health.Check(request, None)
        return response is not None and response.status == health_pb2.HealthCheckResponse.SERVING

    return serving


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task crashed", exc_info=task.exception())


class HasCore(Protocol):
    """Settings that carry the core's settings."""

    @property
    def core(self) -> CoreSettings:
        """The core's settings."""
        ...


S = TypeVar("S", bound=HasCore)


def main(read_settings: Callable[[], S], build_spec: Callable[[S], ServiceSpec]) -> None:
    """Entry point of `python -m services.<name> [serve|migrate]`.

    Args:
        read_settings: reads the service's settings from the environment.
        build_spec: builds the service's spec from them.
    """
    # First: a preStop's SIGUSR1 during start-up must not kill the process (default action).
    signal.signal(signal.SIGUSR1, _drain_before_loop)
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    if command not in ("serve", "migrate"):
        sys.exit(f"usage: python -m services.<name> [serve|migrate] (got {command!r})")
    try:
        service_settings = read_settings()
    except SettingsError as error:
        sys.exit(f"configuration error: {error}")
    settings, spec = service_settings.core, build_spec(service_settings)
    configure_logging(settings.service, settings.log_level, settings.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        eventloop.run(
            serve(settings, spec) if command == "serve" else migrate_only(settings, spec),
            settings.event_loop,
        )
