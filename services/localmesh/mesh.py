"""Start and stop the whole local mesh: embedded NATS and PostgreSQL (unless external URLs
are given), then the three services as separate processes, each `python -m services.<name>`.

Used by `make run` and by the end-to-end tests, so both exercise the same start-up path.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.localmesh.embedded import EmbeddedNats, EmbeddedPostgres, find_free_port

log = logging.getLogger(__name__)

# name → (default port, port variable, full gRPC service name)
SERVICES: dict[str, tuple[int, str, str]] = {
    "order": (50051, "ORDER_PORT", "shop.order.v1.OrderService"),
    "credit": (50052, "CREDIT_PORT", "shop.credit.v1.CreditService"),
    "payment": (50053, "PAYMENT_PORT", "shop.payment.v1.PaymentService"),
}
# name → (default HTTP port: /metrics, /healthz; its variable)
HTTP_PORTS: dict[str, tuple[int, str]] = {
    "order": (8051, "ORDER_HTTP_PORT"),
    "credit": (8052, "CREDIT_HTTP_PORT"),
    "payment": (8053, "PAYMENT_HTTP_PORT"),
}


class MeshError(RuntimeError):
    pass


def health_status(
    target: str,
    service: str,
    timeout: float = 1.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> str:
    """SERVING, NOT_SERVING, … or UNREACHABLE (over TLS when given `credentials`)."""
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


@dataclass
class ServiceProcess:
    name: str
    port: int
    log_path: Path
    http_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _pump: threading.Thread | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def service_name(self) -> str:
        return SERVICES[self.name][2]

    def start(self, env: Mapping[str, str], echo: Callable[[str], None] | None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops us in order
        )
        assert self.process.stdout is not None
        self._pump = threading.Thread(
            target=_pump_lines,
            args=(self.process.stdout, self.log_path, self.name, echo),
            daemon=True,
        )
        self._pump.start()

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        if self.process is None:
            return 0
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 15.0) -> None:
        self.signal(signal.SIGTERM)
        if self.wait(timeout) is None:
            self.signal(signal.SIGKILL)
            self.wait(5)
        if self._pump is not None:
            self._pump.join(timeout=2)


def _pump_lines(
    stream: IO[bytes], log_path: Path, name: str, echo: Callable[[str], None] | None
) -> None:
    with stream, log_path.open("ab") as sink:
        for line in stream:
            sink.write(line)
            sink.flush()
            if echo is not None:
                echo(f"[{name}] {line.decode(errors='replace').rstrip()}")


@dataclass
class LocalMesh:
    """The three services plus whatever infrastructure is not given from outside."""

    data_dir: Path
    database_url: str | None = None
    nats_url: str | None = None
    ports: Mapping[str, int] = field(default_factory=dict)
    # HTTP ports (/metrics, /healthz); by default 805x, or free ones when `ports` asks for 0
    http_ports: Mapping[str, int] = field(default_factory=dict)
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # per service, on top of extra_env (e.g. each service's own TLS certificate)
    service_env_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # how the launcher reaches the services' health checks when extra_env turns TLS on
    health_credentials: grpc.ChannelCredentials | None = None
    echo: Callable[[str], None] | None = None
    progress: Callable[[str], None] = lambda message: None
    nats: EmbeddedNats | None = None
    postgres: EmbeddedPostgres | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def start_infrastructure(self) -> None:
        if self.nats_url is None:
            self.nats = EmbeddedNats(self.data_dir / "nats")
            self.progress("starting NATS with JetStream (embedded)")
            self.nats.start()
            self.nats_url = self.nats.url
            self.progress(_took("NATS", self.nats.port, self.nats.port_was_preferred, 4222))
        if self.database_url is None:
            self.postgres = EmbeddedPostgres(self.data_dir / "postgres", notice=self.progress)
            self.progress("starting PostgreSQL (embedded)")
            self.postgres.start()
            self.database_url = self.postgres.url
            self.progress(
                _took("PostgreSQL", self.postgres.port, self.postgres.port_was_preferred, 5432)
            )

    def service_env(self) -> dict[str, str]:
        assert self.database_url
        assert self.nats_url
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.nats_url,
            "PYTHONUNBUFFERED": "1",
        }
        for name, service in self.services.items():
            env[SERVICES[name][1]] = str(service.port)
            env[HTTP_PORTS[name][1]] = str(service.http_port)
        env["ORDER_TARGET"] = self.services["order"].target
        env["CREDIT_TARGET"] = self.services["credit"].target
        env.update(self.extra_env)
        return env

    def start_services(self, timeout: float = 60.0) -> None:
        for name, (default_port, _, _) in SERVICES.items():
            wanted = self.ports.get(name, default_port)
            port, _ = find_free_port(wanted) if wanted else find_free_port(0)
            if wanted and port != wanted:
                self.progress(f"port {wanted} is busy; {name} takes {port}")
            # the HTTP port: its default beside a default gRPC port, else a free one too
            wanted_http = self.http_ports.get(name, HTTP_PORTS[name][0] if wanted else 0)
            http_port, _ = find_free_port(wanted_http) if wanted_http else find_free_port(0)
            if wanted_http and http_port != wanted_http:
                self.progress(f"port {wanted_http} is busy; {name}'s HTTP port is {http_port}")
            self.services[name] = ServiceProcess(
                name, port, self.data_dir / "logs" / f"{name}.log", http_port
            )
        env = self.service_env()
        for service in self.services.values():
            self.progress(f"starting {service.name} service on port {service.port}")
            service.start({**env, **self.service_env_overrides.get(service.name, {})}, self.echo)
        self.wait_serving(timeout)

    def wait_serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = dict(self.services)
        while pending:
            for name, service in list(pending.items()):
                code = service.process.poll() if service.process else None
                if code is not None:
                    raise MeshError(
                        f"{name} service exited with code {code}; see {service.log_path}:\n"
                        + _tail(service.log_path)
                    )
                status = health_status(
                    service.target, service.service_name, 0.5, self.health_credentials
                )
                if status == "SERVING":
                    self.progress(f"{name} service SERVING on {service.target}")
                    del pending[name]
            if pending and time.monotonic() > deadline:
                raise MeshError(f"not SERVING after {timeout:.0f}s: {', '.join(pending)}")
            if pending:
                time.sleep(0.2)

    def start(self) -> None:
        try:
            self.start_infrastructure()
            self.start_services()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for service in self.services.values():
            service.signal(signal.SIGTERM)  # all at once: they shut down in parallel
        for service in self.services.values():
            self.progress(f"stopping {service.name} service")
            service.stop()
        if self.nats is not None:
            self.progress("stopping NATS")
            self.nats.stop()
        if self.postgres is not None:
            self.progress("stopping PostgreSQL")
            self.postgres.stop()

    def __enter__(self) -> LocalMesh:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _took(what: str, port: int, preferred: bool, usual: int) -> str:
    if preferred:
        return f"{what} listening on 127.0.0.1:{port}"
    return f"{what} listening on 127.0.0.1:{port} (port {usual} is busy, so it took a free one)"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
