"""`shopctl`: the operator's CLI (docs/operations.md). gRPC to the services and JetStream
like any client; the defaults reach `make run`'s mesh; `--json` prints one JSON object per
line. Errors print one clear line on stderr and exit 1 (2 for a bad flag)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import sys
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar

import grpc
import nats
import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError
from rich.console import Console
from rich.table import Table
from typer._click import exceptions as usage  # typer 0.29 carries its own click

from services.common.events import DEADLETTER, STREAMS
from services.common.money import CURRENCY_EXPONENTS
from services.common.security import channel_credentials
from services.common.security_settings import GrpcTls, NatsSecurity
from services.common.settings import Env
from services.shopctl import streams
from shop.common.v1 import money_pb2
from shop.credit.v1 import credit_service_pb2, credit_service_pb2_grpc
from shop.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from shop.payment.v1 import payment_pb2, payment_service_pb2, payment_service_pb2_grpc

T = TypeVar("T")

app = typer.Typer(
    help="Operate the order/credit/payment mesh: status, orders, events, dead letters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
orders_app = typer.Typer(
    help="Orders: create, get, list, cancel, watch, timeline.", no_args_is_help=True
)
credits_app = typer.Typer(help="Credit accounts: top up, show.", no_args_is_help=True)
payments_app = typer.Typer(help="Payments: pay, get, list, refund.", no_args_is_help=True)
events_app = typer.Typer(help="Events on the JetStream streams.", no_args_is_help=True)
dead_app = typer.Typer(
    help="Dead letters: poison events (stream DEADLETTER).", no_args_is_help=True
)
app.add_typer(orders_app, name="orders")
app.add_typer(credits_app, name="credits")
app.add_typer(payments_app, name="payments")
app.add_typer(events_app, name="events")
app.add_typer(dead_app, name="deadletters")

out = Console(highlight=False, soft_wrap=True)
SERVICES = ("order", "credit", "payment")
HEALTH_NAMES = {
    "order": "shop.order.v1.OrderService",
    "credit": "shop.credit.v1.CreditService",
    "payment": "shop.payment.v1.PaymentService",
}


class Failure(Exception):
    """What went wrong, in one line for the operator."""


@dataclass
class Target:
    order: str
    credit: str
    payment: str
    nats: str
    json: bool
    timeout: float
    # As the services read them: GRPC_TLS_CERT/KEY/CA (mutual TLS when a client certificate
    # is named), NATS_USER/NATS_PASSWORD/NATS_TOKEN/NATS_CREDS and NATS_TLS_*.
    grpc_tls: GrpcTls | None = None
    nats_security: NatsSecurity | None = None
    # Each service's HTTP port (/metrics: version and outbox backlog for `status`).
    http: dict[str, str] = field(default_factory=dict)

    def address(self, service: str) -> str:
        return str(getattr(self, service))

    def channel(self, service: str) -> grpc.aio.Channel:
        credentials = channel_credentials(self.grpc_tls)
        if credentials is None:
            return grpc.aio.insecure_channel(self.address(service))
        return grpc.aio.secure_channel(self.address(service), credentials)


async def scrape_metrics(address: str, seconds: float) -> tuple[str | None, int | None]:
    """(version, outbox backlog) from a service's /metrics; None for what cannot be read (the
    HTTP port unreachable, or a family missing)."""

    def fetch() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=seconds) as reply:
            return str(reply.read().decode())

    try:
        text = await asyncio.to_thread(fetch)
    except (OSError, ValueError):
        return None, None
    version = re.search(r'^shop_build_info\{version="([^"]*)"\}', text, re.MULTILINE)
    backlog = re.search(r"^outbox_pending_events(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.MULTILINE)
    return (
        version.group(1) if version else None,
        int(float(backlog.group(1))) if backlog else None,
    )


def target(ctx: typer.Context) -> Target:
    value = ctx.obj
    assert isinstance(value, Target)
    return value


@app.callback()
def options(
    ctx: typer.Context,
    order: Annotated[str, typer.Option(envvar="SHOPCTL_ORDER", help="Order's gRPC address")] = (
        "127.0.0.1:50051"
    ),
    credit: Annotated[
        str, typer.Option(envvar="SHOPCTL_CREDIT", help="Credit's gRPC address")
    ] = "127.0.0.1:50052",
    payment: Annotated[
        str, typer.Option(envvar="SHOPCTL_PAYMENT", help="Payment's gRPC address")
    ] = "127.0.0.1:50053",
    nats_url: Annotated[
        str, typer.Option("--nats", envvar="SHOPCTL_NATS", help="NATS URL (user:password@ ok)")
    ] = "nats://127.0.0.1:4222",
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object per line, for scripts")
    ] = False,
    timeout: Annotated[float, typer.Option(help="seconds per call")] = 5.0,
    order_http: Annotated[
        str, typer.Option(envvar="SHOPCTL_ORDER_HTTP", help="Order's HTTP address (/metrics)")
    ] = "127.0.0.1:8051",
    credit_http: Annotated[
        str, typer.Option(envvar="SHOPCTL_CREDIT_HTTP", help="Credit's HTTP address (/metrics)")
    ] = "127.0.0.1:8052",
    payment_http: Annotated[
        str, typer.Option(envvar="SHOPCTL_PAYMENT_HTTP", help="Payment's HTTP address (/metrics)")
    ] = "127.0.0.1:8053",
) -> None:
    env = Env()
    grpc_tls, nats_security = GrpcTls.read(env), NatsSecurity.read(env)
    if env.problems:
        print(f"shopctl: {'; '.join(env.problems)}", file=sys.stderr)
        raise typer.Exit(2)
    ctx.obj = Target(
        order,
        credit,
        payment,
        nats_url,
        as_json,
        timeout,
        grpc_tls,
        nats_security,
        {"order": order_http, "credit": credit_http, "payment": payment_http},
    )


def run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except Failure as failure:
        print(f"shopctl: {failure}", file=sys.stderr)
        raise typer.Exit(1) from None
    except grpc.aio.AioRpcError as error:
        print(f"shopctl: {error.code().name}: {error.details()}", file=sys.stderr)
        raise typer.Exit(1) from None


def emit(t: Target, record: dict[str, Any], human: str | Table) -> None:
    if t.json:
        print(json.dumps(record, default=str), flush=True)
    else:
        out.print(human)


async def connect_nats(t: Target) -> NatsClient:
    try:
        return await asyncio.wait_for(
            nats.connect(
                t.nats,
                **_nats_auth(t.nats_security),
                connect_timeout=t.timeout,
                allow_reconnect=False,
                error_cb=_quiet,
                name="shopctl",
            ),
            t.timeout * 2,
        )
    except (Exception, TimeoutError) as error:
        why = str(error) or type(error).__name__
        raise Failure(f"NATS at {_redact(t.nats)} unreachable: {why}") from None


def _nats_auth(sec: NatsSecurity | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if sec is None:
        return options
    if sec.user:
        options.update(user=sec.user, password=sec.password)
    if sec.token:
        options["token"] = sec.token
    if sec.creds_file:
        options["user_credentials"] = sec.creds_file
    if (context := sec.ssl_context()) is not None:
        options["tls"] = context
    return options


async def _quiet(error: Exception) -> None:
    """The connection's errors surface as the call's failure, in one line."""


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def pb(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


# -- status -----------------------------------------------------------------------------------


@app.command()
def status(ctx: typer.Context) -> None:
    """Each service's health, the streams with their consumers' lag, and the dead letters."""
    t = target(ctx)

    async def work() -> int:
        healthy = True
        for service in SERVICES:
            address = t.address(service)
            async with t.channel(service) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                try:
                    reply = await stub.Check(
                        health_pb2.HealthCheckRequest(service=HEALTH_NAMES[service]),
                        timeout=t.timeout,
                    )
                    state = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                except grpc.aio.AioRpcError as error:
                    state = f"{error.code().name}"
            healthy = healthy and state == "SERVING"
            version, backlog = await scrape_metrics(t.http[service], t.timeout)
            emit(
                t,
                {
                    "kind": "service",
                    "service": service,
                    "address": address,
                    "health": state,
                    "version": version,
                    "outbox_pending": backlog,
                },
                f"{service:<8} {address:<22} {'[green]' if state == 'SERVING' else '[red]'}"
                f"{state}[/]  version {version or '?'}  outbox backlog "
                f"{'?' if backlog is None else backlog}",
            )
        nc = await connect_nats(t)
        try:
            js = nc.jetstream(timeout=t.timeout)
            for name in [*STREAMS, DEADLETTER]:
                try:
                    info = await js.stream_info(name)
                except NotFoundError:
                    emit(t, {"kind": "stream", "stream": name, "missing": True}, f"{name}: missing")
                    continue
                record: dict[str, Any] = {
                    "kind": "stream",
                    "stream": name,
                    "messages": info.state.messages,
                    "last_seq": info.state.last_seq,
                }
                line = f"stream {name:<10} {info.state.messages:>7} messages"
                if name == DEADLETTER:
                    record["dead_letters"] = info.state.messages
                    style = "red" if info.state.messages else "green"
                    line = f"[{style}]{line} (dead letters)[/]"
                emit(t, record, line)
                for consumer in await js.consumers_info(name):
                    if not consumer.config.durable_name:
                        continue  # a reader's ephemeral consumer (shopctl's own scans)
                    lag = consumer.num_pending or 0
                    pending = consumer.num_ack_pending or 0
                    emit(
                        t,
                        {
                            "kind": "consumer",
                            "stream": name,
                            "consumer": consumer.name,
                            "lag": lag,
                            "ack_pending": pending,
                        },
                        f"  consumer {consumer.name:<18} lag {lag:>5}  unacked {pending:>4}",
                    )
        finally:
            await nc.close()
        return 0 if healthy else 1

    code = run(work())
    if code:
        raise typer.Exit(code)


# -- orders -------------------------------------------------------------------------------------


@orders_app.command("get")
def orders_get(ctx: typer.Context, order_id: str) -> None:
    """The order as Order reports it now."""
    t = target(ctx)

    async def work() -> dict[str, Any]:
        async with t.channel("order") as channel:
            stub = order_service_pb2_grpc.OrderServiceStub(channel)
            reply = await stub.GetOrder(
                order_service_pb2.GetOrderRequest(order_id=order_id), timeout=t.timeout
            )
        return pb(reply.order)

    order = run(work())
    emit(t, order, _order_line(order))


def _order_line(order: dict[str, Any]) -> str:
    status = str(order.get("status", "")).removeprefix("ORDER_STATUS_")
    reason = f" ({order['failure_reason']})" if order.get("failure_reason") else ""
    return f"order {order.get('order_id')}  {status}{reason}  {show_money(order.get('total', {}))}"


@orders_app.command("timeline")
def orders_timeline(ctx: typer.Context, order_id: str) -> None:
    """Every event about the order from the three streams, in order, with the gaps between
    them, and the order, its hold and its payment as the services report them now."""
    t = target(ctx)

    async def work() -> tuple[list[streams.StreamEvent], dict[str, Any]]:
        nc = await connect_nats(t)
        try:
            js = nc.jetstream(timeout=t.timeout)
            found: list[streams.StreamEvent] = []
            for name in STREAMS:
                async for event in streams.scan(js, name):
                    fields = event.decoded() or {}
                    if fields.get("order_id") == order_id:
                        found.append(event)
        finally:
            await nc.close()
        found.sort(key=lambda e: (_occurred(e), e.time, e.stream, e.seq))
        return found, await _current(t, order_id)

    events, now = run(work())
    if not events and not now.get("order"):
        raise_failure(f"no order {order_id}: no event names it and Order does not know it")
    previous: datetime | None = None
    for event in events:
        at = _occurred(event)
        gap = (at - previous).total_seconds() if previous else 0.0
        previous = at
        fields = event.decoded() or {}
        record = {"kind": "event", "at": at.isoformat(), "gap_seconds": gap, **event.as_json()}
        detail = fields.get("reason") or fields.get("failure_reason") or ""
        emit(
            t,
            record,
            f"{at:%H:%M:%S.%f}"[:-3]
            + f"  +{gap:7.3f}s  {event.subject:<28} "
            f"{event.event_type.rsplit('.', 1)[-1]} {detail}".rstrip(),
        )
    for kind, value in now.items():
        if t.json:
            emit(t, {"kind": kind, kind: value}, "")
        elif value:
            out.print(f"now: {kind:<8} {_summary(kind, value)}")
        else:
            out.print(f"now: {kind:<8} none")


def raise_failure(message: str) -> None:
    print(f"shopctl: {message}", file=sys.stderr)
    raise typer.Exit(1)


def _occurred(event: streams.StreamEvent) -> datetime:
    fields = event.decoded() or {}
    stamp = fields.get("occurred_at")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            pass
    return event.time


def _summary(kind: str, value: dict[str, Any]) -> str:
    if kind == "order":
        return _order_line(value)
    if kind == "payment":
        return _payment_line(value)
    status = str(value.get("state", value.get("status", "")))
    held = show_money(value.get("amount", {}))
    return f"{value.get('reservation_id', '')}  {status}  {held}"


async def _current(t: Target, order_id: str) -> dict[str, Any]:
    """The order, its hold and its payment now; None for what a service does not know."""
    now: dict[str, Any] = {"order": None, "hold": None, "payment": None}
    try:
        async with t.channel("order") as channel:
            reply = await order_service_pb2_grpc.OrderServiceStub(channel).GetOrder(
                order_service_pb2.GetOrderRequest(order_id=order_id), timeout=t.timeout
            )
        now["order"] = pb(reply.order)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return now
    if reservation := reply.order.reservation_id:
        try:
            async with t.channel("credit") as channel:
                held = await credit_service_pb2_grpc.CreditServiceStub(channel).GetReservation(
                    credit_service_pb2.GetReservationRequest(reservation_id=reservation),
                    timeout=t.timeout,
                )
            now["hold"] = pb(held.reservation)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
    async with t.channel("payment") as channel:
        paid = await payment_service_pb2_grpc.PaymentServiceStub(channel).ListPayments(
            payment_service_pb2.ListPaymentsRequest(order_id=order_id), timeout=t.timeout
        )
    if paid.payments:
        now["payment"] = pb(paid.payments[-1])
    return now


# -- the RPCs ----------------------------------------------------------------------------------


def money(amount: str, currency: str) -> money_pb2.Money:
    """ "12.50" in `currency` as minor units; a bad amount is a bad parameter."""
    currency = currency.upper()
    if currency not in CURRENCY_EXPONENTS:
        raise typer.BadParameter(f"unknown currency {currency!r}")
    try:
        value = Decimal(amount) * 10 ** CURRENCY_EXPONENTS[currency]
    except InvalidOperation:
        raise typer.BadParameter(f"{amount!r} is not an amount") from None
    if value != value.to_integral_value():
        raise typer.BadParameter(f"{amount} has too many decimals for {currency}")
    return money_pb2.Money(currency_code=currency, minor_units=int(value))


def show_money(value: dict[str, Any]) -> str:
    currency = str(value.get("currency_code", ""))
    exponent = CURRENCY_EXPONENTS.get(currency, 2)
    units = Decimal(int(value.get("minor_units", 0))).scaleb(-exponent)
    return f"{units:.{exponent}f} {currency}"


def call(t: Target, service: str, method: str, request: Message) -> Any:
    """One RPC on `service`'s stub; its status in one line on failure."""
    stubs: dict[str, Any] = {
        "order": order_service_pb2_grpc.OrderServiceStub,
        "credit": credit_service_pb2_grpc.CreditServiceStub,
        "payment": payment_service_pb2_grpc.PaymentServiceStub,
    }

    async def work() -> Any:
        async with t.channel(service) as channel:
            return await getattr(stubs[service](channel), method)(request, timeout=t.timeout)

    return run(work())


AmountOption = Annotated[str, typer.Option(help="e.g. 150.00")]
CurrencyOption = Annotated[str, typer.Option(help="ISO 4217 code")]
RequestIdOption = Annotated[
    str | None, typer.Option(help="idempotency key (a UUID; a new one by default)")
]


@credits_app.command("top-up")
def credits_top_up(
    ctx: typer.Context,
    customer_id: str,
    amount: AmountOption,
    currency: CurrencyOption = "USD",
    request_id: RequestIdOption = None,
) -> None:
    """Add credits to a customer's account (made on first top-up)."""
    t = target(ctx)
    reply = call(
        t,
        "credit",
        "TopUpCredits",
        credit_service_pb2.TopUpCreditsRequest(
            customer_id=customer_id,
            amount=money(amount, currency),
            request_id=request_id or str(uuid.uuid4()),
        ),
    )
    account = pb(reply.account)
    emit(t, account, _account_line(account))


@credits_app.command("show")
def credits_show(ctx: typer.Context, customer_id: str) -> None:
    """A customer's balance and what is held."""
    t = target(ctx)
    reply = call(
        t,
        "credit",
        "GetCreditAccount",
        credit_service_pb2.GetCreditAccountRequest(customer_id=customer_id),
    )
    account = pb(reply.account)
    emit(t, account, _account_line(account))


def _account_line(account: dict[str, Any]) -> str:
    amounts = "  ".join(
        f"{name} {show_money(value)}" for name, value in account.items() if isinstance(value, dict)
    )
    return f"account {account.get('customer_id')}  {amounts}"


@orders_app.command("create")
def orders_create(
    ctx: typer.Context,
    customer_id: str,
    items: Annotated[list[str], typer.Argument(help="SKU:QUANTITY:UNIT_PRICE, e.g. book:2:12.50")],
    currency: CurrencyOption = "USD",
    request_id: RequestIdOption = None,
) -> None:
    """Place an order; the saga reserves credits for it."""
    t = target(ctx)
    parsed = []
    for item in items:
        sku, _, rest = item.partition(":")
        quantity, _, price = rest.partition(":")
        if not sku or not quantity.isdigit() or not price:
            raise typer.BadParameter(f"{item!r} is not SKU:QUANTITY:UNIT_PRICE")
        parsed.append(
            order_pb2.OrderItem(sku=sku, quantity=int(quantity), unit_price=money(price, currency))
        )
    reply = call(
        t,
        "order",
        "CreateOrder",
        order_service_pb2.CreateOrderRequest(
            customer_id=customer_id, items=parsed, request_id=request_id or str(uuid.uuid4())
        ),
    )
    order = pb(reply.order)
    emit(t, order, _order_line(order))


@orders_app.command("list")
def orders_list(
    ctx: typer.Context,
    customer_id: str,
    page_size: Annotated[int, typer.Option()] = 50,
) -> None:
    """A customer's orders (the first page)."""
    t = target(ctx)
    reply = call(
        t,
        "order",
        "ListOrders",
        order_service_pb2.ListOrdersRequest(customer_id=customer_id, page_size=page_size),
    )
    for order in reply.orders:
        record = pb(order)
        emit(t, record, _order_line(record))


@orders_app.command("cancel")
def orders_cancel(
    ctx: typer.Context,
    order_id: str,
    reason: Annotated[str, typer.Option()] = "cancelled by an operator",
) -> None:
    """Cancel an order that is not paid; its hold is released."""
    t = target(ctx)
    reply = call(
        t,
        "order",
        "CancelOrder",
        order_service_pb2.CancelOrderRequest(order_id=order_id, reason=reason),
    )
    order = pb(reply.order)
    emit(t, order, _order_line(order))


FINAL = {
    "ORDER_STATUS_REJECTED",
    "ORDER_STATUS_PAYMENT_FAILED",
    "ORDER_STATUS_CANCELLED",
    "ORDER_STATUS_REFUNDED",
}


@orders_app.command("watch")
def orders_watch(ctx: typer.Context, order_id: str) -> None:
    """The order now, then again at every change of its status (WatchOrder, a server stream:
    no polling), until it can change no more (Ctrl-C stops earlier)."""
    t = target(ctx)

    async def work() -> None:
        last = None
        request = order_service_pb2.WatchOrderRequest(order_id=order_id)
        async with t.channel("order") as channel:
            stub = order_service_pb2_grpc.OrderServiceStub(channel)
            while True:  # the server ends a stream after its longest watch: watch again
                async for change in stub.WatchOrder(request):
                    order = pb(change.order)
                    if order.get("status") != last:
                        last = order.get("status")
                        emit(t, order, _order_line(order))
                    if last in FINAL:
                        return

    with contextlib.suppress(KeyboardInterrupt):
        run(work())


@payments_app.command("pay")
def payments_pay(
    ctx: typer.Context,
    order_id: str,
    method: Annotated[str, typer.Option(help="CREDIT_CARD, DEBIT_CARD, PAYPAL, APPLE_PAY")] = (
        "CREDIT_CARD"
    ),
    request_id: RequestIdOption = None,
) -> None:
    """Pay a reserved order its total, from its hold."""
    t = target(ctx)
    try:
        payment_method = payment_pb2.PaymentMethod.Value(f"PAYMENT_METHOD_{method.upper()}")
    except ValueError:
        raise typer.BadParameter(f"unknown payment method {method!r}") from None
    order = call(t, "order", "GetOrder", order_service_pb2.GetOrderRequest(order_id=order_id))
    reply = call(
        t,
        "payment",
        "ProcessPayment",
        payment_service_pb2.ProcessPaymentRequest(
            order_id=order_id,
            customer_id=order.order.customer_id,
            reservation_id=order.order.reservation_id,
            amount=order.order.total,
            payment_method=payment_method,
            request_id=request_id or str(uuid.uuid4()),
        ),
    )
    record = pb(reply)
    emit(
        t,
        record,
        _payment_line(record.get("payment", {}))
        + (f"  ({reply.error_message})" if reply.error_message else ""),
    )
    if not reply.success:
        raise typer.Exit(1)


@payments_app.command("get")
def payments_get(ctx: typer.Context, payment_id: str) -> None:
    """One payment and its refunds."""
    t = target(ctx)
    reply = call(
        t, "payment", "GetPayment", payment_service_pb2.GetPaymentRequest(payment_id=payment_id)
    )
    record = pb(reply.payment)
    emit(t, record, _payment_line(record))


@payments_app.command("list")
def payments_list(
    ctx: typer.Context,
    order: Annotated[str | None, typer.Option(help="an order's payments")] = None,
    customer: Annotated[str | None, typer.Option(help="a customer's payments")] = None,
) -> None:
    """Payments of an order or of a customer."""
    t = target(ctx)
    if bool(order) == bool(customer):
        raise typer.BadParameter("give one of --order or --customer")
    reply = call(
        t,
        "payment",
        "ListPayments",
        payment_service_pb2.ListPaymentsRequest(order_id=order or "", customer_id=customer or ""),
    )
    for payment in reply.payments:
        record = pb(payment)
        emit(t, record, _payment_line(record))


@payments_app.command("refund")
def payments_refund(
    ctx: typer.Context,
    payment_id: str,
    amount: Annotated[
        str | None, typer.Option(help="part of it (all that is left by default)")
    ] = None,
    currency: CurrencyOption = "USD",
    reason: Annotated[str, typer.Option()] = "refunded by an operator",
    request_id: RequestIdOption = None,
) -> None:
    """Give a payment back, in full or in part."""
    t = target(ctx)
    request = payment_service_pb2.RefundPaymentRequest(
        payment_id=payment_id, reason=reason, request_id=request_id or str(uuid.uuid4())
    )
    if amount is not None:
        request.amount.CopyFrom(money(amount, currency))
    reply = call(t, "payment", "RefundPayment", request)
    record = pb(reply)
    emit(t, record, _payment_line(record.get("payment", {})))


def _payment_line(payment: dict[str, Any]) -> str:
    status = str(payment.get("status", "")).removeprefix("PAYMENT_STATUS_")
    refunded = payment.get("refunded_amount")
    extra = f"  refunded {show_money(refunded)}" if refunded else ""
    return (
        f"payment {payment.get('payment_id')}  order {payment.get('order_id')}  {status}"
        f"  {show_money(payment.get('amount', {}))}{extra}"
    )


# -- events ------------------------------------------------------------------------------------


@events_app.command("tail")
def events_tail(
    ctx: typer.Context,
    subjects: Annotated[
        list[str] | None, typer.Argument(help="subjects or patterns, e.g. payments.> (all)")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="start this far back: 30s, 5m, 2h, 1d, or an ISO time")
    ] = None,
    count: Annotated[int, typer.Option(help="stop after this many events (0: never)")] = 0,
) -> None:
    """Live events, decoded by ce-type, one per line."""
    t = target(ctx)
    start = _since(since) if since else None
    wanted = subjects or [pattern for pattern in STREAMS.values()]
    try:
        by_stream = [(streams.stream_of(subject), subject) for subject in wanted]
    except ValueError as error:
        raise_failure(str(error))
        return

    async def work() -> None:
        nc = await connect_nats(t)
        queue: asyncio.Queue[streams.StreamEvent] = asyncio.Queue()

        async def pump(stream: str, subject: str) -> None:
            async for event in streams.scan(
                nc.jetstream(), stream, subject, since=start, follow=True
            ):
                await queue.put(event)

        pumps = [asyncio.create_task(pump(stream, subject)) for stream, subject in by_stream]
        shown = 0
        try:
            while count == 0 or shown < count:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait([getter, *pumps], return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    for task in done:
                        task.result()  # a pump failed: say why
                    continue
                event = getter.result()
                fields = event.decoded()
                emit(
                    t,
                    event.as_json(),
                    f"{event.time:%H:%M:%S.%f}"[:-3]
                    + f"  {event.subject:<28} "
                    + (json.dumps(fields, separators=(",", ":")) if fields else "<undecodable>"),
                )
                shown += 1
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await nc.close()

    with contextlib.suppress(KeyboardInterrupt):
        run(work())


def _since(text: str) -> datetime:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither 30s/5m/2h/1d nor an ISO time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- dead letters ------------------------------------------------------------------------------


@dead_app.command("list")
def dead_list(
    ctx: typer.Context,
    consumer: Annotated[str | None, typer.Option(help="only this consumer's")] = None,
) -> None:
    """The dead letters, oldest first."""
    t = target(ctx)
    letters = run(_with_js(t, lambda js: streams.dead_letters(js, consumer)))
    if t.json:
        for letter in letters:
            print(json.dumps(letter.as_json(), default=str), flush=True)
        return
    if not letters:
        out.print("no dead letters")
        return
    table = Table("seq", "consumer", "subject", "deliveries", "dead at", "reason")
    for letter in letters:
        record = letter.as_json()
        table.add_row(
            str(letter.seq),
            letter.consumer,
            letter.original_subject,
            str(record["deliveries"]),
            record["dead_at"],
            letter.reason,
        )
    out.print(table)


@dead_app.command("show")
def dead_show(ctx: typer.Context, seq: int) -> None:
    """One dead letter: its headers and the event decoded."""
    t = target(ctx)
    letter = run(_with_js(t, lambda js: _letter(js, seq)))
    record = letter.as_json()
    if t.json:
        print(json.dumps(record, default=str))
        return
    out.print(f"dead letter {seq}: {letter.original_subject} (consumer {letter.consumer})")
    for name, value in sorted(letter.headers.items()):
        out.print(f"  {name}: {value}")
    out.print(json.dumps(record["event"], indent=2) if record["event"] else "  <undecodable body>")


@dead_app.command("replay")
def dead_replay(
    ctx: typer.Context,
    seqs: list[int],
    new_id: Annotated[
        bool, typer.Option("--new-id", help="publish with a new Nats-Msg-Id")
    ] = False,
    keep: Annotated[bool, typer.Option(help="keep the dead letter after the replay")] = False,
) -> None:
    """Publish dead letters to their original subject again (after the fix); the inbox
    applies each at most once wherever it was already applied."""
    t = target(ctx)

    async def work(js: Any) -> list[streams.Replayed]:
        done = []
        for seq in seqs:
            await _letter(js, seq)
            done.append(await streams.replay(js, seq, new_id=new_id, keep=keep))
        return done

    failed = False
    for replayed in run(_with_js(t, work)):
        failed = failed or replayed.duplicate
        note = (
            " DROPPED by JetStream as a duplicate of the original (its id is in the"
            " duplicate window): replay again with --new-id"
            if replayed.duplicate
            else ""
        )
        emit(
            t,
            {"kind": "replayed", **dataclasses.asdict(replayed)},
            f"replayed {replayed.seq} to {replayed.subject} as #{replayed.stream_seq}{note}",
        )
    if failed:
        raise typer.Exit(1)


@dead_app.command("discard")
def dead_discard(
    ctx: typer.Context,
    seqs: list[int],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Delete dead letters for good."""
    t = target(ctx)
    if not yes and not typer.confirm(f"Discard {len(seqs)} dead letter(s) for good?"):
        raise_failure("nothing discarded")
    gone = run(_with_js(t, lambda js: streams.discard(js, seqs)))
    for seq in seqs:
        emit(
            t,
            {"kind": "discarded", "seq": seq, "discarded": seq in gone},
            f"discarded {seq}" if seq in gone else f"no dead letter {seq}",
        )
    if len(gone) < len(seqs):
        raise typer.Exit(1)


async def _letter(js: Any, seq: int) -> streams.DeadLetter:
    try:
        return await streams.dead_letter(js, seq)
    except NotFoundError:
        raise Failure(f"no dead letter {seq}") from None


async def _with_js(t: Target, action: Callable[[Any], Awaitable[T]]) -> T:
    nc = await connect_nats(t)
    try:
        return await action(nc.jetstream(timeout=t.timeout))
    finally:
        await nc.close()


def main() -> None:
    """The console script. A usage error (a bad flag, a missing argument) is one line on
    stderr and exit status 2, like every other error is one line and status 1."""
    try:
        status = app(standalone_mode=False)
    except usage.NoArgsIsHelpError as shown:  # `shopctl orders`: its help
        print(shown.format_message())
        sys.exit(2)
    except usage.UsageError as error:
        command = error.ctx.command_path if error.ctx else "shopctl"
        print(f"shopctl: {error.format_message()} (see '{command} --help')", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:  # Ctrl-C at a prompt
        print(file=sys.stderr)
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
