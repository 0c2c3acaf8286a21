"""The metrics of a running three-process mesh, as a real Prometheus scrapes and queries
them; the component's alert rules loaded into it and every dashboard query accepted."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.localmesh.mesh import LocalMesh
from shop.order.v1 import order_pb2
from tests.e2e.shop import Shop
from tests.observability.prometheus import ALERTS, dashboard_queries, require, running_prometheus

pytestmark = pytest.mark.e2e

PAYMENTS = 3
# gRPC only: the Connect door's calls (protocol="connect") are other tests' (same mesh).
PROCESS_PAYMENT = (
    "sum(grpc_server_handled_total{"
    'grpc_method="ProcessPayment",service="payment",grpc_code="OK",protocol="grpc"})'
)


@pytest.fixture
async def shop(mesh: LocalMesh) -> AsyncIterator[Shop]:
    channels = {name: grpc.aio.insecure_channel(s.target) for name, s in mesh.services.items()}
    try:
        yield Shop.connect(channels)
    finally:
        for channel in channels.values():
            await channel.close()


def scrape(address: str, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def process_payment_ok(text: str) -> float:
    """The ProcessPayment OK count in one /metrics page (0 before the first call)."""
    wanted = ('grpc_method="ProcessPayment"', 'grpc_code="OK"', 'protocol="grpc"')
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{") and all(w in line for w in wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def metric_names(promql: str) -> set[str]:
    """The metric names a query selects (its `by (…)` label lists left out)."""
    without_labels = re.sub(r"\b(by|without)\s*\([^)]*\)", "", promql)
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=[{\[)])", without_labels))


def test_each_service_serves_metrics_and_healthz(mesh: LocalMesh) -> None:
    for service in mesh.services.values():
        status, text = scrape(service.http_address, "/healthz")
        assert (status, text.strip()) == (200, "SERVING"), service.name
        status, text = scrape(service.http_address)
        assert status == 200
        assert "# TYPE grpc_server_handled_total counter" in text
        assert "# TYPE db_pool_connections gauge" in text
        assert scrape(service.http_address, "/nope")[0] == 404


async def test_prometheus_scrapes_the_mesh(mesh: LocalMesh, shop: Shop, tmp_path: Path) -> None:
    require("prometheus")
    before = process_payment_ok(scrape(mesh.services["payment"].http_address)[1])
    targets = {name: s.http_address for name, s in mesh.services.items()}
    with running_prometheus(tmp_path / "prometheus", targets, [ALERTS]) as prometheus:
        customer = shop.new_customer()
        await shop.top_up(customer, 100_000)
        for _ in range(PAYMENTS):
            order = await shop.reserved_order(customer, 1000)
            await shop.pay(order)
            await shop.order_in(order.order_id, order_pb2.ORDER_STATUS_PAID)

        up = await asyncio.to_thread(prometheus.wait_for, 'sum(up{job="shop"})', 3.0)
        assert up == 3.0, prometheus.query("up")
        handled = await asyncio.to_thread(prometheus.wait_for, PROCESS_PAYMENT, before + PAYMENTS)
        assert handled == before + PAYMENTS

        # the outbox, consumer, pool and business families, from (at least) the services
        # these sagas make them move in
        for promql, services in {
            "outbox_pending_events": {"order", "credit", "payment"},
            "outbox_oldest_pending_age_seconds": {"order", "credit", "payment"},
            "outbox_published_total": {"order", "credit", "payment"},
            'events_consumed_total{outcome="applied"}': {"order", "credit"},
            "event_lag_seconds_count": {"order", "credit"},
            'db_pool_connections{state="max"}': {"order", "credit", "payment"},
            'payments_total{status="SUCCEEDED"}': {"payment"},
            'orders_total{status="PAID"}': {"order"},
            'grpc_client_handled_total{grpc_method="GetOrder",grpc_code="OK"}': {"payment"},
        }.items():
            found = {series["metric"]["service"] for series in prometheus.query(promql)}
            assert services <= found, promql

        # the alert rules loaded, none firing on a healthy mesh
        rules = prometheus.api("rules")
        names = {rule["name"] for group in rules["groups"] for rule in group["rules"]}
        assert names == {
            "OutboxBacklogStale",
            "EventDeadLettered",
            "HighErrorRatio",
            "ProcessPaymentSlow",
        }
        # The session's mesh is shared: other tests publish poison events on purpose, so
        # EventDeadLettered may rightly fire here; nothing else may.
        firing = {alert["labels"]["alertname"] for alert in prometheus.api("alerts")["alerts"]}
        assert firing <= {"EventDeadLettered"}, firing

        # every query of the dashboard is one Prometheus accepts (query() fails on a
        # rejected one), about families the mesh really exports
        exported = set(prometheus.api("label/__name__/values"))
        for promql in dashboard_queries():
            prometheus.query(promql)
            assert metric_names(promql) <= exported, promql
