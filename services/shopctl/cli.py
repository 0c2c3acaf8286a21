"""`shopctl`: the operator's CLI (docs/operations.md). gRPC to the services and JetStream
like any client; the defaults reach `make run`'s mesh; `--json` prints one JSON object per
line. Errors print one clear line on stderr and exit 1 (2 for a bad flag)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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

from services.common.events import DEADLETTER, STREAMS
from services.shopctl import streams
from shop.credit.v1 import credit_service_pb2, credit_service_pb2_grpc
from shop.order.v1 import order_service_pb2, order_service_pb2_grpc
from shop.payment.v1 import payment_service_pb2, payment_service_pb2_grpc

T = TypeVar("T")

app = typer.Typer(
    help="Operate the order/credit/payment mesh: status, orders, events, dead letters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
orders_app = typer.Typer(help="Orders: get one, or its whole story.", no_args_is_help=True)
events_app = typer.Typer(help="Events on the JetStream streams.", no_args_is_help=True)
dead_app = typer.Typer(
    help="Dead letters: poison events (stream DEADLETTER).", no_args_is_help=True
)
app.add_typer(orders_app, name="orders")
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

    def address(self, service: str) -> str:
        return str(getattr(self, service))


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
) -> None:
    ctx.obj = Target(order, credit, payment, nats_url, as_json, timeout)


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
            async with grpc.aio.insecure_channel(address) as channel:
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
            emit(
                t,
                {"kind": "service", "service": service, "address": address, "health": state},
                f"{service:<8} {address:<22} {'[green]' if state == 'SERVING' else '[red]'}"
                f"{state}[/]",
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
        async with grpc.aio.insecure_channel(t.order) as channel:
            stub = order_service_pb2_grpc.OrderServiceStub(channel)
            reply = await stub.GetOrder(
                order_service_pb2.GetOrderRequest(order_id=order_id), timeout=t.timeout
            )
        return pb(reply.order)

    order = run(work())
    emit(t, order, _order_line(order))


def _order_line(order: dict[str, Any]) -> str:
    total = order.get("total", {})
    money = f"{int(total.get('minor_units', 0)) / 100:.2f} {total.get('currency_code', '')}"
    status = str(order.get("status", "")).removeprefix("ORDER_STATUS_")
    reason = f" ({order['failure_reason']})" if order.get("failure_reason") else ""
    return f"order {order.get('order_id')}  {status}{reason}  {money}"


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
    amount = value.get("amount", {})
    money = f"{int(amount.get('minor_units', 0)) / 100:.2f} {amount.get('currency_code', '')}"
    status = str(value.get("status", ""))
    return f"{value.get(f'{kind}_id', value.get('reservation_id', ''))}  {status}  {money}"


async def _current(t: Target, order_id: str) -> dict[str, Any]:
    """The order, its hold and its payment now; None for what a service does not know."""
    now: dict[str, Any] = {"order": None, "hold": None, "payment": None}
    try:
        async with grpc.aio.insecure_channel(t.order) as channel:
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
            async with grpc.aio.insecure_channel(t.credit) as channel:
                held = await credit_service_pb2_grpc.CreditServiceStub(channel).GetReservation(
                    credit_service_pb2.GetReservationRequest(reservation_id=reservation),
                    timeout=t.timeout,
                )
            now["hold"] = pb(held.reservation)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
    async with grpc.aio.insecure_channel(t.payment) as channel:
        paid = await payment_service_pb2_grpc.PaymentServiceStub(channel).ListPayments(
            payment_service_pb2.ListPaymentsRequest(order_id=order_id), timeout=t.timeout
        )
    if paid.payments:
        now["payment"] = pb(paid.payments[-1])
    return now


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
    app()


if __name__ == "__main__":
    main()
