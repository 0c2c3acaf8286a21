"""The service's HTTP port, in the same process and on the same event loop as its gRPC
server: `GET /metrics` (Prometheus text format) and `GET /healthz` (200 when the gRPC health
is SERVING, else 503). An ASGI app served by uvicorn, so the Connect door can be mounted on
the same port later.

Uvicorn's `Server.serve()` would install its own SIGINT/SIGTERM handlers; the runtime owns
the signals, so only its `startup()` and `shutdown()` are used here.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Serving = Callable[[], Awaitable[bool]]


class HttpApp:
    """The ASGI app: /metrics and /healthz; 404 for anything else."""

    def __init__(self, serving: Serving) -> None:
        self._serving = serving

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request (ASGI)."""
        if scope["type"] != "http":
            return  # lifespan is off; no websockets
        path, method = scope["path"], scope["method"]
        if path == "/metrics" and method in ("GET", "HEAD"):
            await _respond(send, 200, generate_latest(), CONTENT_TYPE_LATEST)
        elif path == "/healthz" and method in ("GET", "HEAD"):
            ok = await self._serving()
            await _respond(send, 200 if ok else 503, b"SERVING\n" if ok else b"NOT_SERVING\n")
        else:
            await _respond(send, 404, b"not found\n")


async def _respond(
    send: Send, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def listen(host: str, port: int) -> socket.socket:
    """A listening socket; "[::]", "::" or "" (all interfaces, as gRPC's GRPC_HOST says it)
    is both IPv6 and IPv4 where the system can, like the gRPC port.

    Args:
        host: the address to bind.
        port: the port (0 for a free one).

    Returns:
        The bound, listening socket.
    """
    bind = host.strip("[]")
    if bind in ("", "::", "0.0.0.0"):
        if socket.has_dualstack_ipv6():
            return socket.create_server(
                ("::", port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=False
            )
        return socket.create_server(("0.0.0.0", port))
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    return socket.create_server((bind, port), family=family)


class HttpServer:
    """uvicorn serving an ASGI app in this process, on the running event loop."""

    def __init__(self, host: str, port: int, app: Any) -> None:
        self._host = host
        self._socket: socket.socket | None = None
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                port=port,
                lifespan="off",
                log_config=None,
                access_log=False,
                server_header=False,
                date_header=False,
                timeout_graceful_shutdown=2,
            )
        )

    @property
    def port(self) -> int:
        """The port it listens on (the real one when 0 was asked for)."""
        assert self._socket is not None, "not started"
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind the port and start serving; raises OSError when the port is taken."""
        config = self._server.config
        try:
            self._socket = listen(self._host, config.port)
        except OSError as error:
            raise OSError(f"cannot listen on HTTP port {config.port}: {error}") from error
        if not config.loaded:
            config.load()
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup(sockets=[self._socket])

    async def stop(self) -> None:
        """Stop accepting, finish what is in flight, close."""
        if self._server.started:
            await self._server.shutdown()
