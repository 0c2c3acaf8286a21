"""The Order service through its real entry points: the gRPC API of the running process, and
its durable consumers fed over the real NATS. Only Order's own behaviour is asserted: where
the Credit service may act on the same order (it answers every orders.created), the tests
accept either legal outcome and check that the end state is consistent."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from typing import TypeAlias

import asyncpg
import grpc
import nats
import pytest
from google.protobuf.message import Message

from services.common.events import envelope, new_event
from services.localmesh.mesh import LocalMesh
from services.order.domain.model import MAX_ITEMS, MAX_SKU_LENGTH
from shop.common.v1.money_pb2 import Money
from shop.credit.v1 import events_pb2 as credit_events
from shop.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from shop.payment.v1 import events_pb2 as payment_events
from tests.e2e.conftest import rich_status
from tests.ids import new_id

pytestmark = pytest.mark.e2e

# The async stub type exists only in the generated .pyi.
Stub: TypeAlias = "order_service_pb2_grpc.OrderServiceAsyncStub"
OPEN = (order_pb2.ORDER_STATUS_PENDING, order_pb2.ORDER_STATUS_RESERVED)
GRPC_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # the default the mesh runs with


def item(
    sku: str = "SKU-BOOK-1", quantity: int = 1, minor: int | None = 1999, currency: str = "USD"
) -> order_pb2.OrderItem:
    if minor is None:
        return order_pb2.OrderItem(sku=sku, quantity=quantity)
    return order_pb2.OrderItem(
        sku=sku, quantity=quantity, unit_price=Money(currency_code=currency, minor_units=minor)
    )


@pytest.fixture
async def orders(mesh: LocalMesh) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(mesh.services["order"].target) as channel:
        yield order_service_pb2_grpc.OrderServiceStub(channel)


async def create(stub: Stub, customer: str, *items: order_pb2.OrderItem) -> order_pb2.Order:
    request = order_service_pb2.CreateOrderRequest(
        customer_id=customer, items=list(items) or [item()], request_id=new_id()
    )
    return (await stub.CreateOrder(request)).order


async def get(stub: Stub, order_id: str) -> order_pb2.Order:
    return (await stub.GetOrder(order_service_pb2.GetOrderRequest(order_id=order_id))).order


async def list_page(
    stub: Stub, customer: str, page_size: int = 0, page_token: str = ""
) -> order_service_pb2.ListOrdersResponse:
    return await stub.ListOrders(
        order_service_pb2.ListOrdersRequest(
            customer_id=customer, page_size=page_size, page_token=page_token
        )
    )


async def failed_call(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info, _ = rich_status(error)
    assert info is not None, error
    return str(info.reason)


async def try_cancel(
    stub: Stub, request: order_service_pb2.CancelOrderRequest
) -> tuple[order_pb2.Order | None, grpc.aio.AioRpcError | None]:
    """The cancelled order, or the error (when Credit's rejection got there first)."""
    try:
        return (await stub.CancelOrder(request)).order, None
    except grpc.aio.AioRpcError as error:
        return None, error


# --- CreateOrder -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "bad_fields"),
    [
        ({"customer_id": "not-a-uuid"}, {"customer_id"}),
        ({"customer_id": ""}, {"customer_id"}),
        ({"request_id": ""}, {"request_id"}),
        ({"request_id": "42"}, {"request_id"}),
        ({"items": []}, {"items"}),
        ({"items": [item(sku="")]}, {"items[0].sku"}),
        ({"items": [item(sku="x" * 129)]}, {"items[0].sku"}),
        ({"items": [item(quantity=0)]}, {"items[0].quantity"}),
        ({"items": [item(), item(quantity=-1)]}, {"items[1].quantity"}),
        ({"items": [item(minor=None)]}, {"items[0].unit_price"}),
        ({"items": [item(minor=-5)]}, {"items[0].unit_price"}),
        ({"items": [item(currency="ABC")]}, {"items[0].unit_price.currency_code"}),
        ({"items": [item(), item(currency="EUR")]}, {"items[1].unit_price.currency_code"}),
        ({"items": [item(minor=0)]}, {"items"}),
        ({"items": [item(minor=2**63 - 1), item(minor=1)]}, {"items"}),
        (
            {
                "customer_id": "x",
                "request_id": "",
                "items": [item(sku=""), item(quantity=0, minor=None)],
            },
            {
                "customer_id",
                "request_id",
                "items[0].sku",
                "items[1].quantity",
                "items[1].unit_price",
            },
        ),
    ],
)
async def test_bad_create_order_names_every_bad_field_and_creates_nothing(
    orders: Stub, fields: dict[str, object], bad_fields: set[str]
) -> None:
    customer = new_id()
    request_fields: dict[str, object] = {
        "customer_id": customer,
        "items": [item()],
        "request_id": new_id(),
        **fields,
    }
    request = order_service_pb2.CreateOrderRequest(**request_fields)  # type: ignore[arg-type]
    error = await failed_call(orders.CreateOrder(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad = rich_status(error)
    assert info is not None
    assert info.reason == "INVALID_ARGUMENT"
    assert bad is not None
    assert {v.field for v in bad.field_violations} == bad_fields
    assert "Traceback" not in (error.details() or "")
    assert list((await list_page(orders, customer)).orders) == []


async def test_create_order_is_pending_with_the_exact_total(orders: Stub) -> None:
    customer = new_id()
    created = await create(
        orders,
        customer,
        item("SKU-A", 3, 1999, currency=""),  # empty currency means USD
        item("SKU-B", 1, 1),
        item("SKU-FREE", 2, 0),
    )
    uuid.UUID(created.order_id)
    assert created.customer_id == customer
    assert created.status == order_pb2.ORDER_STATUS_PENDING
    assert (created.total.currency_code, created.total.minor_units) == ("USD", 5998)
    assert [(i.sku, i.quantity, i.unit_price.currency_code) for i in created.items] == [
        ("SKU-A", 3, "USD"),
        ("SKU-B", 1, "USD"),
        ("SKU-FREE", 2, "USD"),
    ]
    assert (created.reservation_id, created.payment_id, created.failure_reason) == ("", "", "")
    assert created.HasField("created_at")
    read = await get(orders, created.order_id)
    assert (read.order_id, read.total, list(read.items)) == (
        created.order_id,
        created.total,
        list(created.items),
    )


async def test_the_largest_int64_total_is_exact(orders: Stub) -> None:
    created = await create(orders, new_id(), item("A", 1, 2**63 - 2, "JPY"), item("B", 1, 1, "JPY"))
    assert (created.total.currency_code, created.total.minor_units) == ("JPY", 2**63 - 1)


async def test_a_retried_create_order_returns_the_first_order(orders: Stub) -> None:
    customer = new_id()
    request = order_service_pb2.CreateOrderRequest(
        customer_id=customer, items=[item(quantity=2)], request_id=new_id()
    )
    first = (await orders.CreateOrder(request)).order
    again = (await orders.CreateOrder(request)).order
    assert again == first
    listed = (await list_page(orders, customer)).orders
    assert [o.order_id for o in listed] == [first.order_id]


async def test_a_reused_request_id_is_refused_and_changes_nothing(orders: Stub) -> None:
    customer = new_id()
    request = order_service_pb2.CreateOrderRequest(
        customer_id=customer, items=[item()], request_id=new_id()
    )
    first = (await orders.CreateOrder(request)).order
    other = order_service_pb2.CreateOrderRequest()
    other.CopyFrom(request)
    other.items[0].quantity = 5
    error = await failed_call(orders.CreateOrder(other))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(error) == "IDEMPOTENCY_KEY_REUSED"
    listed = (await list_page(orders, customer)).orders
    assert [o.order_id for o in listed] == [first.order_id]


# --- GetOrder / ListOrders ---------------------------------------------------------------


async def test_an_unknown_order_is_not_found(orders: Stub) -> None:
    order_id = new_id()
    error = await failed_call(orders.GetOrder(order_service_pb2.GetOrderRequest(order_id=order_id)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    info, _ = rich_status(error)
    assert info is not None
    assert info.reason == "ORDER_NOT_FOUND"
    assert info.metadata["order_id"] == order_id


async def test_get_order_with_a_bad_id_is_invalid(orders: Stub) -> None:
    error = await failed_call(orders.GetOrder(order_service_pb2.GetOrderRequest(order_id="42")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad = rich_status(error)
    assert bad is not None
    assert [v.field for v in bad.field_violations] == ["order_id"]


async def test_list_orders_pages_newest_first_without_duplicates(orders: Stub) -> None:
    customer = new_id()
    created = [(await create(orders, customer)).order_id for _ in range(5)]
    await create(orders, new_id())  # another customer's order never shows up

    pages: list[list[str]] = []
    token = ""
    while True:
        page = await list_page(orders, customer, page_size=2, page_token=token)
        pages.append([o.order_id for o in page.orders])
        assert all(o.customer_id == customer for o in page.orders)
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    seen = [order_id for page_ids in pages for order_id in page_ids]
    assert seen == list(reversed(created))

    everything = await list_page(orders, customer)  # page_size 0 means the default (50)
    assert [o.order_id for o in everything.orders] == seen
    assert everything.next_page_token == ""


@pytest.mark.parametrize(
    ("page_size", "page_token", "field"),
    [(0, "not-a-token", "page_token"), (-1, "", "page_size")],
)
async def test_bad_paging_is_invalid(
    orders: Stub, page_size: int, page_token: str, field: str
) -> None:
    error = await failed_call(list_page(orders, new_id(), page_size, page_token))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad = rich_status(error)
    assert bad is not None
    assert [v.field for v in bad.field_violations] == [field]


async def test_a_page_token_of_another_customer_is_invalid(orders: Stub) -> None:
    customer = new_id()
    for _ in range(2):
        await create(orders, customer)
    token = (await list_page(orders, customer, page_size=1)).next_page_token
    assert token
    error = await failed_call(list_page(orders, new_id(), page_size=1, page_token=token))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def crafted(payload: bytes) -> str:
    """A page token made by hand, in the shape the service's tokens once had."""
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


@pytest.mark.parametrize(
    "page_token",
    [
        crafted(json.dumps({"t": "2026-01-01T00:00:00+00:00", "i": 5, "q": "x"}).encode()),
        crafted(json.dumps({"t": ["2026"], "i": str(uuid.uuid4()), "q": "x"}).encode()),
        crafted(json.dumps({"t": "2026-01-01T00:00:00", "i": str(uuid.uuid4()), "q": 1}).encode()),
        crafted(b"[" * 5000 + b"]" * 5000),
        crafted(b"{}") + "." + crafted(b"\x00" * 32),
    ],
    ids=["int-id", "list-time", "naive-time", "nested", "bad-signature"],
)
async def test_a_crafted_page_token_is_invalid(orders: Stub, page_token: str) -> None:
    error = await failed_call(list_page(orders, new_id(), 0, page_token))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    _, bad = rich_status(error)
    assert bad is not None
    assert [v.field for v in bad.field_violations] == ["page_token"]


async def test_a_list_of_big_orders_comes_in_pages_that_fit(orders: Stub) -> None:
    """64 orders of MAX_ITEMS items with the longest SKUs are about 4.5 MB: a page of 1000
    would not fit in one 4 MiB message. Smaller pages come instead, each order once."""
    customer = new_id()
    big = [item(sku=f"{n:03d}".ljust(MAX_SKU_LENGTH, "S"), minor=1) for n in range(MAX_ITEMS)]
    created = [(await create(orders, customer, *big)).order_id for _ in range(64)]
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        page = await list_page(orders, customer, page_size=1000, page_token=token)
        assert page.ByteSize() <= GRPC_MAX_MESSAGE_BYTES
        sizes.append(len(page.orders))
        seen += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert len(sizes) > 1
    assert all(size >= 1 for size in sizes)
    assert seen == list(reversed(created))  # every order once, newest first


async def test_list_orders_needs_a_customer(orders: Stub) -> None:
    error = await failed_call(list_page(orders, ""))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- CancelOrder -------------------------------------------------------------------------


async def test_cancel_is_final_and_idempotent(orders: Stub) -> None:
    # No credit account: Credit answers orders.created with credits.reservation_failed, so
    # the cancel races that rejection. Either way the order ends in one terminal state.
    created = await create(orders, new_id())
    cancel = order_service_pb2.CancelOrderRequest(order_id=created.order_id, reason="too slow")
    cancelled, error = await try_cancel(orders, cancel)
    if error is not None:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(error) == "ORDER_NOT_CANCELLABLE"
        rejected = await get(orders, created.order_id)
        assert rejected.status == order_pb2.ORDER_STATUS_REJECTED
        assert rejected.failure_reason == "ACCOUNT_NOT_FOUND"
        return
    assert cancelled is not None
    assert cancelled.status == order_pb2.ORDER_STATUS_CANCELLED
    assert cancelled.failure_reason == "too slow"
    assert cancelled.total == created.total

    # Cancelling again returns the order as it is: same reason, not touched again.
    again = (await orders.CancelOrder(cancel)).order
    assert again == cancelled
    other_reason = order_service_pb2.CancelOrderRequest(order_id=created.order_id)
    assert (await orders.CancelOrder(other_reason)).order == cancelled
    # A rejection arriving after the cancel is late and never moves the order.
    await asyncio.sleep(1.0)
    assert await get(orders, created.order_id) == cancelled


async def test_cancel_without_a_reason_says_the_customer_did_it(orders: Stub) -> None:
    created = await create(orders, new_id())
    cancelled, error = await try_cancel(
        orders, order_service_pb2.CancelOrderRequest(order_id=created.order_id)
    )
    if error is not None:  # Credit's rejection came first
        assert reason_of(error) == "ORDER_NOT_CANCELLABLE"
        return
    assert cancelled is not None
    assert cancelled.failure_reason == "CANCELLED_BY_CUSTOMER"


async def test_cancel_of_an_unknown_order_is_not_found(orders: Stub) -> None:
    error = await failed_call(
        orders.CancelOrder(order_service_pb2.CancelOrderRequest(order_id=new_id()))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(error) == "ORDER_NOT_FOUND"


@pytest.mark.parametrize(
    ("order_id", "reason", "fields"),
    [
        ("nope", "", {"order_id"}),
        (None, "x" * 1001, {"reason"}),
        ("", "x" * 1001, {"order_id", "reason"}),
    ],
)
async def test_bad_cancel_is_invalid(
    orders: Stub, order_id: str | None, reason: str, fields: set[str]
) -> None:
    request = order_service_pb2.CancelOrderRequest(
        order_id=new_id() if order_id is None else order_id, reason=reason
    )
    error = await failed_call(orders.CancelOrder(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad = rich_status(error)
    assert bad is not None
    assert {v.field for v in bad.field_violations} == fields


# --- The consumers, fed over the real NATS -----------------------------------------------


async def publish(mesh: LocalMesh, source: str, *events: Message) -> None:
    """Publish as the producing service's outbox relay would (CloudEvents headers)."""
    assert mesh.nats_url
    nc = await nats.connect(mesh.nats_url)
    try:
        js = nc.jetstream()
        for event in events:
            env = envelope(event, source)
            await js.publish(env.subject, env.payload, headers=env.headers)
    finally:
        await nc.close()


async def wait_applied(mesh: LocalMesh, *events: Message, timeout: float = 20.0) -> None:
    """Until Order's inbox holds each event: it was handled and committed (or ignored)."""
    assert mesh.database_url
    ids = [uuid.UUID(e.event_id) for e in events]  # type: ignore[attr-defined]
    url = mesh.database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM orders.inbox WHERE event_id = ANY($1::uuid[])", ids
            )
            if done == len(ids):
                return
            assert asyncio.get_running_loop().time() < deadline, f"{done}/{len(ids)} applied"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def test_a_failed_reservation_rejects_the_order(mesh: LocalMesh, orders: Stub) -> None:
    # Credit sends the same answer for a customer without an account; whichever copy comes
    # first rejects the order and the other is late, so the outcome is the same.
    created = await create(orders, new_id())
    failed = new_event(
        credit_events.CreditReservationFailed,
        order_id=created.order_id,
        customer_id=created.customer_id,
        amount=created.total,
        reason="ACCOUNT_NOT_FOUND",
        message="the customer has no credit account",
    )
    await publish(mesh, "/shop/credit", failed)
    await wait_applied(mesh, failed)
    rejected = await get(orders, created.order_id)
    assert rejected.status == order_pb2.ORDER_STATUS_REJECTED
    assert rejected.failure_reason == "ACCOUNT_NOT_FOUND"

    error = await failed_call(
        orders.CancelOrder(order_service_pb2.CancelOrderRequest(order_id=created.order_id))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "ORDER_NOT_CANCELLABLE"


async def test_late_events_never_move_a_finished_order(mesh: LocalMesh, orders: Stub) -> None:
    created = await create(orders, new_id())
    _, error = await try_cancel(
        orders, order_service_pb2.CancelOrderRequest(order_id=created.order_id)
    )
    if error is not None:  # rejected first: just as final
        assert reason_of(error) == "ORDER_NOT_CANCELLABLE"
    finished = await get(orders, created.order_id)
    assert finished.status not in OPEN

    reservation_id, payment_id = new_id(), new_id()
    common = {"order_id": created.order_id, "customer_id": created.customer_id}
    late_credits = [
        new_event(
            credit_events.CreditsReserved,
            reservation_id=reservation_id,
            amount=created.total,
            **common,
        ),
        new_event(
            credit_events.CreditsReleased,
            reservation_id=reservation_id,
            amount=created.total,
            reason="EXPIRED",
            **common,
        ),
    ]
    late_payments = [
        new_event(
            payment_events.PaymentSucceeded,
            payment_id=payment_id,
            amount=created.total,
            transaction_id="txn_0123456789abcdef",
            **common,
        ),
        new_event(
            payment_events.PaymentFailed,
            payment_id=payment_id,
            amount=created.total,
            error_code="CARD_DECLINED",
            **common,
        ),
    ]
    await publish(mesh, "/shop/credit", *late_credits)
    await publish(mesh, "/shop/payment", *late_payments)
    await wait_applied(mesh, *late_credits, *late_payments)
    assert await get(orders, created.order_id) == finished


async def test_an_event_for_an_unknown_order_is_ignored(mesh: LocalMesh, orders: Stub) -> None:
    # Logged and acknowledged: it must not be redelivered forever nor block later events.
    stray = new_event(
        credit_events.CreditsReserved,
        reservation_id=new_id(),
        order_id=new_id(),
        customer_id=new_id(),
        amount=Money(currency_code="USD", minor_units=100),
    )
    await publish(mesh, "/shop/credit", stray)
    await wait_applied(mesh, stray)
