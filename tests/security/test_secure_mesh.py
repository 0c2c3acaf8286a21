"""The whole mesh locked down, end to end: the three services as separate processes with
mutual TLS on every gRPC server and on Payment's channels to Order and Credit, the
authorization policy of docs/security.md, NATS run with the manifests' configuration (a user
and password per service, each with only its own permissions: deploy/k8s/base/nats-auth.conf)
and a DATABASE_URL that carries a password. A full saga runs; strangers are refused; no
secret reaches a log."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest

from services.localmesh.mesh import LocalMesh
from shop.credit.v1 import credit_pb2
from shop.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from shop.payment.v1 import payment_pb2
from tests.conftest import Infra
from tests.e2e.conftest import GRPCURL, rich_status
from tests.e2e.shop import Shop, usd
from tests.ids import new_id
from tests.security.certs import Issued, Pki
from tests.security.nats_auth import service_passwords, start_deployed_nats

pytestmark = pytest.mark.e2e

DB_PASSWORD = "pg-pw-c0ffee42"  # the embedded server trusts; the URL still carries it

HEALTH = "/grpc.health.v1.Health/*=*"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/*=client"
# The trust model of docs/security.md: clients (a BFF) call the public APIs; Payment only the
# two reads it validates with; any verified identity may ask for health.
POLICIES = {
    "order": "/shop.order.v1.OrderService/GetOrder=payment,client;"
    f"/shop.order.v1.OrderService/*=client;{HEALTH};{REFLECTION}",
    "credit": "/shop.credit.v1.CreditService/GetReservation=payment,client;"
    f"/shop.credit.v1.CreditService/*=client;{HEALTH};{REFLECTION}",
    "payment": f"/shop.payment.v1.PaymentService/*=client;{HEALTH};{REFLECTION}",
}


def with_password(url: str) -> tuple[str, str]:
    """The URL with a password (ours unless it already has one) and that password."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    netloc = f"{parts.username or 'postgres'}:{DB_PASSWORD}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)), DB_PASSWORD


def credentials(pki: Pki, who: Issued | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert_pem,
        private_key=who.key_pem if who else None,
        certificate_chain=who.cert_pem if who else None,
    )


@pytest.fixture(scope="module")
def nats_passwords() -> dict[str, str]:
    return service_passwords()


@pytest.fixture(scope="module")
def secure_mesh(
    infra: Infra, pki: Pki, tmp_path_factory: pytest.TempPathFactory, nats_passwords: dict[str, str]
) -> Iterator[tuple[LocalMesh, str]]:
    root = tmp_path_factory.mktemp("secure-mesh")
    nats = start_deployed_nats(root / "nats", nats_passwords)
    database_url, db_password = with_password(asyncio.run(infra.create_database("secure")))
    mesh = LocalMesh(
        data_dir=root,
        database_url=database_url,
        nats_url=nats.url,
        ports={"order": 0, "credit": 0, "payment": 0},
        extra_env={
            "GRPC_TLS_CA": str(pki.ca.cert),
            "GRPC_TLS_CLIENT_AUTH": "require",
            "LOG_LEVEL": "DEBUG",  # the most talkative the services get
        },
        service_env_overrides={
            name: {
                "GRPC_TLS_CERT": str(pki.service(name).cert),
                "GRPC_TLS_KEY": str(pki.service(name).key),
                "GRPC_AUTHZ_RULES": POLICIES[name],
                "NATS_USER": name,
                "NATS_PASSWORD": nats_passwords[name],
            }
            for name in POLICIES
        },
        health_credentials=credentials(pki, pki.client),
    )
    try:
        mesh.start()
        yield mesh, db_password
    finally:
        mesh.stop()
        nats.stop()


def channel(mesh: LocalMesh, name: str, creds: grpc.ChannelCredentials) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(mesh.services[name].target, creds)


@pytest.fixture
async def client_shop(secure_mesh: tuple[LocalMesh, str], pki: Pki) -> AsyncIterator[Shop]:
    mesh, _ = secure_mesh
    channels = {name: channel(mesh, name, credentials(pki, pki.client)) for name in POLICIES}
    shop = Shop.connect(channels)
    try:
        yield shop
        await shop.check_books()
    finally:
        for ch in channels.values():
            await ch.close()


async def test_a_full_saga_over_mutual_tls(client_shop: Shop) -> None:
    """Payment validates through GetOrder and GetReservation over mTLS as "payment"; the
    events flow over the password-protected NATS."""
    shop = client_shop
    customer = shop.new_customer()
    await shop.top_up(customer, 30000)
    order = await shop.reserved_order(customer, 12000)
    paid = await shop.pay(order)
    assert paid.success, paid
    assert paid.payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED
    await shop.order_in(order.order_id, order_pb2.ORDER_STATUS_PAID)
    await shop.reservation_in(order.reservation_id, credit_pb2.RESERVATION_STATE_CAPTURED)
    refunded = await shop.refund(paid.payment.payment_id)
    assert refunded.payment.status == payment_pb2.PAYMENT_STATUS_REFUNDED
    await shop.order_in(order.order_id, order_pb2.ORDER_STATUS_REFUNDED)
    # Credit applies payments.refunded on its own, not necessarily before Order does.
    for _ in range(100):
        account = await shop.account(customer)
        if account.available.minor_units == 30000:
            break
        await asyncio.sleep(0.1)
    assert account.available.minor_units == 30000


async def test_ownership_is_enforced_over_mutual_tls(client_shop: Shop) -> None:
    shop = client_shop
    owner = shop.new_customer()
    await shop.top_up(owner, 5000)
    order = await shop.reserved_order(owner, 3000)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await shop.pay(order, customer_id=new_id())
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info, _ = rich_status(denied.value)
    assert info is not None
    assert info.reason == "ORDER_NOT_OWNED"
    assert await shop.payments_of(order.order_id) == []


async def test_payment_may_read_orders_but_not_create_them(
    secure_mesh: tuple[LocalMesh, str], pki: Pki
) -> None:
    mesh, _ = secure_mesh
    async with channel(mesh, "order", credentials(pki, pki.payment)) as ch:
        stub = order_service_pb2_grpc.OrderServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as missing:  # allowed: the order is unknown
            await stub.GetOrder(order_service_pb2.GetOrderRequest(order_id=new_id()), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.CreateOrder(
                order_service_pb2.CreateOrderRequest(
                    customer_id=new_id(),
                    items=[order_pb2.OrderItem(sku="SKU-1", quantity=1, unit_price=usd(100))],
                    request_id=new_id(),
                ),
                timeout=10,
            )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info, _ = rich_status(denied.value)
    assert info is not None
    assert info.reason == "CALLER_NOT_AUTHORIZED"
    assert info.metadata["method"] == "/shop.order.v1.OrderService/CreateOrder"


async def read_something(ch: grpc.aio.Channel, service: str) -> object:
    """A public read on `service` (the answer itself does not matter here)."""
    shop = Shop.connect({name: ch for name in POLICIES})
    if service == "order":
        return await shop.get_order(new_id())
    if service == "credit":
        return await shop.reservation(new_id())
    return await shop.payments_of(new_id())


@pytest.mark.parametrize("service", ["order", "credit", "payment"])
async def test_an_outsider_with_a_valid_certificate_is_denied(
    secure_mesh: tuple[LocalMesh, str], pki: Pki, service: str
) -> None:
    mesh, _ = secure_mesh
    async with channel(mesh, service, credentials(pki, pki.outsider)) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await read_something(ch, service)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info, _ = rich_status(denied.value)
    assert info is not None
    assert info.reason == "CALLER_NOT_AUTHORIZED"
    assert info.metadata["caller"] == "outsider"


@pytest.mark.parametrize("who", ["no certificate", "another CA", "plaintext"])
async def test_callers_without_a_valid_certificate_are_refused(
    secure_mesh: tuple[LocalMesh, str], pki: Pki, who: str
) -> None:
    mesh, _ = secure_mesh
    for service in POLICIES:
        if who == "plaintext":
            ch = grpc.aio.insecure_channel(mesh.services[service].target)
        else:
            client = None if who == "no certificate" else pki.stranger
            ch = channel(mesh, service, credentials(pki, client))
        async with ch:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await read_something(ch, service)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, service


@pytest.mark.parametrize(("who", "allowed"), [("client", True), ("outsider", False)])
def test_grpcurl_with_a_client_certificate(
    secure_mesh: tuple[LocalMesh, str], pki: Pki, who: str, allowed: bool
) -> None:
    """As docs/security.md says: -cacert/-cert/-key instead of -plaintext."""
    mesh, _ = secure_mesh
    issued: Issued = getattr(pki, who)
    result = subprocess.run(
        [
            str(GRPCURL),
            "-cacert",
            str(pki.ca.cert),
            "-cert",
            str(issued.cert),
            "-key",
            str(issued.key),
            "-d",
            f'{{"customer_id": "{new_id()}"}}',
            mesh.services["credit"].target,
            "shop.credit.v1.CreditService/GetCreditAccount",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    # reflection answers the client; the call then reaches the servicer (no account: NotFound)
    expected = "NotFound" if allowed else "PermissionDenied"
    assert expected in output, output


def test_no_secret_reaches_the_logs(
    secure_mesh: tuple[LocalMesh, str], nats_passwords: dict[str, str]
) -> None:
    """Runs after the saga above (same module): every line the three services wrote."""
    mesh, db_password = secure_mesh
    for name, service in mesh.services.items():
        deadline = time.monotonic() + 30  # NATS connects in the background after SERVING
        while "connected to NATS" not in (text := service.log_path.read_text(errors="replace")):
            assert time.monotonic() < deadline, f"{name} never connected to NATS:\n{text}"
            time.sleep(0.2)
        assert "SERVING" in text, name
        assert db_password not in text, name
        for password in nats_passwords.values():
            assert password not in text, name
        # Under its own NATS user the service did all it does (streams, consumers, the
        # saga's events) without one refused publish or subscription.
        assert "Permissions Violation" not in text, name
        assert "BEGIN PRIVATE KEY" not in text, name
