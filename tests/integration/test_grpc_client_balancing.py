"""Outgoing channels spread calls over every address of their target (round_robin), as a
dns:/// target on a headless Service resolves to one address per pod (docs/deploy.md)."""

from __future__ import annotations

from collections import Counter

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.grpc_client import create_channel

HEALTH = "grpc.health.v1.Health"


async def start_replica(
    status: health_pb2.HealthCheckResponse.ServingStatus.ValueType,
) -> tuple[grpc.aio.Server, int]:
    """A server whose health for "replica" tells which replica answered."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    await servicer.set("replica", status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_calls_are_spread_over_every_address_of_the_target() -> None:
    first, first_port = await start_replica(health_pb2.HealthCheckResponse.SERVING)
    second, second_port = await start_replica(health_pb2.HealthCheckResponse.NOT_SERVING)
    channel = create_channel(f"ipv4:127.0.0.1:{first_port},127.0.0.1:{second_port}", HEALTH)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        answers: Counter[int] = Counter()
        for _ in range(40):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service="replica"), timeout=5)
            answers[reply.status] += 1
        # round_robin: both replicas answer (pick_first would send every call to one)
        assert answers[health_pb2.HealthCheckResponse.SERVING] >= 10, answers
        assert answers[health_pb2.HealthCheckResponse.NOT_SERVING] >= 10, answers
    finally:
        await channel.close()
        await first.stop(None)
        await second.stop(None)
