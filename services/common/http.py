"""The service's HTTP port, in the same process and on the same event loop as its gRPC
server: `GET /metrics` (Prometheus text format), `GET /healthz` (200 when the gRPC health
is SERVING, else 503) and the Connect door (services/common/connect.py). An ASGI app served
by uvicorn; with GRPC_TLS_* set, the port speaks TLS with the same certificate, and a
client certificate the CA verifies names the caller (`PEER_IDENTITIES` in the ASGI scope).

Uvicorn's `Server.serve()` would install its own SIGINT/SIGTERM handlers; the runtime owns
the signals, so only its `startup()` and `shutdown()` are used here.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.common.security_settings import GrpcTls

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Serving = Callable[[], Awaitable[bool]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# The ASGI scope key of the names a verified client certificate gives the caller (its CN
# and SANs), as the gRPC door reads them from its auth context; absent without one.
PEER_IDENTITIES = "shop.peer_identities"


class HttpApp:
    """The ASGI app: /metrics, /healthz, then the Connect door (`door`) for anything else."""

    def __init__(self, serving: Serving, door: App | None = None) -> None:
        self._serving = serving
        self._door = door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request (ASGI)."""
        if scope["type"] != "http":
            return  # lifespan is off; no websockets
        path, method = scope["path"], scope["method"]
        if path == "/metrics" and method in ("GET", "HEAD"):
            await respond(send, 200, generate_latest(), CONTENT_TYPE_LATEST)
        elif path == "/healthz" and method in ("GET", "HEAD"):
            ok = await self._serving()
            await respond(send, 200 if ok else 503, b"SERVING\n" if ok else b"NOT_SERVING\n")
        elif self._door is not None:
            await self._door(scope, receive, send)
        else:
            await respond(send, 404, b"not found\n")


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a whole response at once.

    Args:
        send: the ASGI send callable.
        status: the HTTP status.
        body: the body.
        content_type: its content type.
        extra_headers: more headers.
    """
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def certificate_names(certificate: Mapping[str, Any] | None) -> frozenset[str]:
    """The names a verified peer certificate gives (`ssl.SSLSocket.getpeercert()` form): its
    subject CN and every SAN, as gRPC's auth context lists them.

    Args:
        certificate: the decoded certificate, or None when the peer sent none.

    Returns:
        The names; empty without a certificate.
    """
    if not certificate:
        return frozenset()
    names = {
        value for rdn in certificate.get("subject", ()) for key, value in rdn if key == "commonName"
    }
    names |= {value for _kind, value in certificate.get("subjectAltName", ())}
    return frozenset(names)


class _IdentifyingProtocol(HttpToolsProtocol):
    """HTTP/1.1 (httptools: a C parser, a third less CPU per call than h11's pure Python) that
    puts the caller's verified certificate names into each request's scope."""

    def connection_made(self, transport: Any) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        names = certificate_names(ssl_object.getpeercert() if ssl_object is not None else None)
        if names:
            inner = self.app

            async def identified(scope: Scope, receive: Receive, send: Send) -> None:
                scope[PEER_IDENTITIES] = names
                await inner(scope, receive, send)

            self.app = identified
        super().connection_made(transport)


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

    def __init__(self, host: str, port: int, app: Any, tls: GrpcTls | None = None) -> None:
        self._host = host
        self._socket: socket.socket | None = None
        # With TLS, a client certificate is verified when one is sent but not demanded here:
        # probes and Prometheus reach /healthz and /metrics with the server's TLS alone, and
        # the Connect door refuses calls whose caller the authorization rules do not allow.
        ssl_options: dict[str, Any] = {}
        if tls is not None:
            ssl_options = {
                "ssl_certfile": tls.cert_file,
                "ssl_keyfile": tls.key_file,
                "ssl_ca_certs": tls.ca_file or None,
                "ssl_cert_reqs": ssl.CERT_OPTIONAL if tls.ca_file else ssl.CERT_NONE,
            }
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                port=port,
                http=_IdentifyingProtocol,
                **ssl_options,
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
