"""The Prometheus metric families of every service (names and labels: docs/observability.md).

Recorded once, in the shared core: the gRPC server and client interceptors, the outbox
relay, the event consumer, the pool and the unit of work's commit. Handlers record nothing
themselves. Served on the HTTP port's `/metrics` (services/common/http.py).
"""

from __future__ import annotations

import contextvars
import importlib.metadata
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

# No `<name>_created` series beside every counter and histogram: half the page, and nothing
# Prometheus needs (a restart is seen as a counter reset).
disable_created_metrics()  # type: ignore[no-untyped-call]


# 1 ms to 10 s, about three buckets a decade.
def _version() -> str:
    try:
        return importlib.metadata.version("shop-mesh")
    except importlib.metadata.PackageNotFoundError:  # run from a tree that was not installed
        return "unknown"


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Event lag (ce-time to applied) is longer: add a minute's worth past 10 s.
LAG_BUCKETS = (*LATENCY_BUCKETS, 30.0, 60.0)

GRPC_SERVER_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed by this server, by method, status code and protocol (grpc or connect).",
    ["grpc_service", "grpc_method", "grpc_code", "protocol"],
)
GRPC_SERVER_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's arrival to its status, by method and protocol.",
    ["grpc_service", "grpc_method", "protocol"],
    buckets=LATENCY_BUCKETS,
)
GRPC_CLIENT_HANDLED = Counter(
    "grpc_client_handled_total",
    "RPCs this service made to another, by method and the status it got.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_CLIENT_SECONDS = Histogram(
    "grpc_client_handling_seconds",
    "Time of the outgoing RPCs this service made, retries included.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
OUTBOX_PENDING = Gauge(
    "outbox_pending_events", "Outbox rows committed but not yet published to NATS."
)
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_pending_age_seconds",
    "Age of the oldest unpublished outbox row (0 when none is pending).",
)
OUTBOX_PUBLISHED = Counter(
    "outbox_published_total", "Events the outbox relay published, by subject.", ["subject"]
)
EVENTS_CONSUMED = Counter(
    "events_consumed_total",
    "Events a consumer handled, by outcome: applied, duplicate (already applied: the inbox"
    " absorbed it), retried (failed; redelivered later) or dead_lettered.",
    ["consumer", "subject", "outcome"],
)
EVENT_LAG = Histogram(
    "event_lag_seconds",
    "Time from an event's ce-time (the state change) to its effect committed by a consumer.",
    ["consumer"],
    buckets=LAG_BUCKETS,
)
PAYMENTS = Counter(
    "payments_total", "Payment outcomes committed, by status (SUCCEEDED, FAILED, …).", ["status"]
)
ORDERS = Counter(
    "orders_total", "Orders that reached a status (PENDING when created, PAID, …).", ["status"]
)
RECONCILIATION = Counter(
    "credit_reconciliation_total",
    "What Credit could not square with a payment (LATE_CAPTURE_SHORT, REFUND_NOT_CAPTURED,"
    " REFUND_OVER_CAPTURE): rows of credits.reconciliation, for people to look at.",
    ["kind"],
)

# The running code's version, as Prometheus's build_info convention has it (shopctl status
# reads it): the one value of `version` is 1.
BUILD_INFO = Gauge("shop_build_info", "The version of the running service.", ["version"])
BUILD_INFO.labels(_version()).set(1)

OUTCOMES = ("applied", "duplicate", "retried", "dead_lettered")


def event_consumed(consumer: str, subject: str, outcome: str) -> None:
    """Count one event handled by `consumer` (outcome: one of OUTCOMES).

    Args:
        consumer: the durable consumer's name.
        subject: the event's subject.
        outcome: `applied`, `duplicate`, `retried` or `dead_lettered`.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    EVENTS_CONSUMED.labels(consumer, subject, outcome).inc()


def split_method(method: str) -> tuple[str, str]:
    """`/shop.payment.v1.PaymentService/ProcessPayment` → (service, method).

    Args:
        method: a gRPC method path.

    Returns:
        (full service name, method name).
    """
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


# Business counters move when the transaction that makes the change commits, never before
# (a batch that rolls back and is applied again event by event must not count twice).
_after_commit: contextvars.ContextVar[list[Callable[[], None]] | None] = contextvars.ContextVar(
    "after_commit", default=None
)


def count_after_commit(counter: Counter, *labels: str) -> None:
    """Increment `counter{labels}` when the current unit of work commits (now if none).

    Args:
        counter: the counter.
        *labels: its label values.
    """
    pending = _after_commit.get()
    child = counter.labels(*labels)
    if pending is None:
        child.inc()
    else:
        pending.append(child.inc)


class CommitCounts:
    """Held by a unit of work: collects count_after_commit calls made inside it."""

    def __init__(self) -> None:
        self._pending: list[Callable[[], None]] = []
        self._token: contextvars.Token[list[Callable[[], None]] | None] | None = None

    def enter(self) -> None:
        """Start collecting the counts of the unit of work being entered."""
        self._pending = []
        self._token = _after_commit.set(self._pending)

    def exit(self, committed: bool) -> None:
        """Apply the collected counts if the unit of work committed; drop them if not."""
        if self._token is not None:
            _after_commit.reset(self._token)
            self._token = None
        if committed:
            for inc in self._pending:
                inc()
        self._pending = []


# Payment outcomes by the event committed with them (the one place every status change of a
# payment passes through: its event in the outbox).
PAYMENT_EVENT_STATUS = {
    "shop.payment.v1.PaymentRequested": "PENDING",
    "shop.payment.v1.PaymentSucceeded": "SUCCEEDED",
    "shop.payment.v1.PaymentFailed": "FAILED",
    "shop.payment.v1.PaymentRefunded": "REFUNDED",
}


def count_event(event_type: str) -> None:
    """Business counters derived from an event written to the outbox.

    Args:
        event_type: the full name of the event's message type.
    """
    if (status := PAYMENT_EVENT_STATUS.get(event_type)) is not None:
        count_after_commit(PAYMENTS, status)


class PoolCollector(Collector):
    """`db_pool_connections{state}`, read from the SQLAlchemy pool at scrape time."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The pool's connections by state, read when Prometheus scrapes."""
        family = GaugeMetricFamily(
            "db_pool_connections",
            "Database connections of this process's pool: in_use, idle, and max (the limit,"
            " overflow included).",
            labels=["state"],
        )
        pool = self._pool
        family.add_metric(["in_use"], float(pool.checkedout()))
        family.add_metric(["idle"], float(pool.checkedin()))
        family.add_metric(["max"], float(pool.size() + getattr(pool, "_max_overflow", 0)))
        yield family


def register_pool(pool: Any) -> Collector:
    """Export `db_pool_connections{state}` for a SQLAlchemy pool.

    Args:
        pool: the engine's pool.

    Returns:
        The collector, to unregister when the engine is disposed.
    """
    collector = PoolCollector(pool)
    REGISTRY.register(collector)
    return collector


def unregister(collector: Collector) -> None:
    """Stop exporting what `collector` collects.

    Args:
        collector: what register_pool returned.
    """
    REGISTRY.unregister(collector)
