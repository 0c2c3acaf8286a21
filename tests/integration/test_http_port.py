"""The HTTP port in-process, on the running event loop: /healthz follows the gRPC health
(200 SERVING, 503 otherwise), /metrics is Prometheus's text format, anything else is 404."""

from __future__ import annotations

import asyncio

from services.common import metrics
from services.common.http import HttpApp, HttpServer


async def get(port: int, path: str) -> tuple[int, bytes, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    content_type = next(
        (
            line.split(":", 1)[1].strip()
            for line in lines
            if line.lower().startswith("content-type")
        ),
        "",
    )
    return int(lines[0].split()[1]), body, content_type


async def test_healthz_follows_serving_and_metrics_are_served() -> None:
    serving = False

    async def is_serving() -> bool:
        return serving

    server = HttpServer("[::]", 0, HttpApp(is_serving))
    await server.start()
    try:
        assert await get(server.port, "/healthz") == (
            503,
            b"NOT_SERVING\n",
            "text/plain; charset=utf-8",
        )
        serving = True
        assert (await get(server.port, "/healthz"))[:2] == (200, b"SERVING\n")
        status, body, content_type = await get(server.port, "/metrics")
        assert status == 200
        assert content_type.startswith("text/plain; version=")
        assert b"# TYPE grpc_server_handled_total counter" in body
        metrics.GRPC_SERVER_HANDLED.labels("s.v1.S", "M", "OK", "grpc").inc()
        body = (await get(server.port, "/metrics"))[1]
        assert b'grpc_server_handled_total{grpc_code="OK",grpc_method="M"' in body
        assert (await get(server.port, "/other"))[0] == 404
    finally:
        await server.stop()
