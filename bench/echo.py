"""The baseline: a bare grpc.aio server that echoes the message it gets, run as its own
process like the services. `python -m bench.echo PORT` prints READY once it listens.

`python -m bench.echo PORT TARGET TARGET` is the fan-out ceiling: before echoing, it asks
each TARGET (two bare echo servers) at once, as ProcessPayment asks Order and Credit. It
is the design's call graph with every other cost (database, events, logic) at zero: what
ProcessPayment could reach if nothing but its gRPC hops cost anything."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

import grpc

from shop.payment.v1.payment_service_pb2 import ProcessPaymentRequest

ECHO_METHOD = "/bench.v1.Echo/Echo"


async def serve(port: int, targets: Sequence[str] = ()) -> None:
    server = grpc.aio.server()
    channels = [grpc.aio.insecure_channel(target) for target in targets]
    peers = [echo_stub(channel) for channel in channels]

    async def echo(request: ProcessPaymentRequest, context: Any) -> ProcessPaymentRequest:
        if peers:
            await asyncio.gather(*(peer(request, timeout=10) for peer in peers))
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.v1.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                echo,
                request_deserializer=ProcessPaymentRequest.FromString,
                response_serializer=ProcessPaymentRequest.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {bound}", flush=True)
    await stop.wait()
    await server.stop(1)
    for channel in channels:
        await channel.close()


def echo_stub(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary(
        ECHO_METHOD,
        request_serializer=ProcessPaymentRequest.SerializeToString,
        response_deserializer=ProcessPaymentRequest.FromString,
    )


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0, sys.argv[2:]))
