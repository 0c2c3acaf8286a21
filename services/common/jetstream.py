"""NATS JetStream wiring: a connection that keeps trying, streams and durable consumers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from services.common.events import DEADLETTER, DEADLETTER_SUBJECTS, STREAMS
from services.common.retention import DUPLICATE_WINDOW_SECONDS, Retention
from services.common.security_settings import NatsSecurity, redact_url, redact_urls

log = logging.getLogger(__name__)

# The event streams and the dead letters' (subjects by stream name).
ALL_STREAMS: dict[str, str] = {**STREAMS, DEADLETTER: DEADLETTER_SUBJECTS}


class Messaging:
    """Owns the NATS connection. Connecting never blocks the service's start: the outbox
    keeps events while NATS is away and `ready` is set once `streams` exist (a service's
    own stream and DEADLETTER; every stream by default, for tools and tests that own all of
    them)."""

    def __init__(
        self,
        url: str,
        name: str,
        security: NatsSecurity | None = None,
        replicas: int = 1,
        retention: Retention | None = None,
        streams: Collection[str] | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self.security = security or NatsSecurity()
        self.replicas = replicas
        self.retention = retention or Retention()
        self.streams = tuple(ALL_STREAMS if streams is None else streams)
        self.ready = asyncio.Event()
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._closing = False

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (once `ready` is set)."""
        assert self._js is not None, "await messaging.ready first"
        return self._js

    @property
    def nc(self) -> NatsClient:
        """The NATS connection (once `ready` is set)."""
        assert self._nc is not None, "await messaging.ready first"
        return self._nc

    async def connect(self) -> None:
        """Connect (retrying forever with backoff) and make sure the streams exist."""
        delay = 0.2
        while self._nc is None:
            try:
                self._nc = await nats.connect(
                    [url.strip() for url in self.url.split(",")],
                    name=self.name,
                    **self._auth_options(),
                    connect_timeout=2,
                    reconnect_time_wait=0.5,
                    max_reconnect_attempts=-1,  # never give up after the first connection
                    ping_interval=5,
                    max_outstanding_pings=3,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
            except Exception as error:  # NoServersError, OSError, timeouts
                log.warning(
                    "NATS at %s not reachable (%s); retrying in %.1fs",
                    redact_urls(self.url),
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._js = self._nc.jetstream(timeout=5)
        while True:
            try:
                await ensure_streams(self._js, self.replicas, self.streams, self.retention)
                break
            except Exception as error:
                log.warning("cannot create JetStream streams yet (%s); retrying", error)
                await asyncio.sleep(1.0)
        log.info(
            "connected to NATS at %s",
            redact_url(self._nc.connected_url.geturl())
            if self._nc.connected_url
            else redact_urls(self.url),
        )
        self.ready.set()

    def _auth_options(self) -> dict[str, Any]:
        """Credentials and TLS from the settings (user:password in the URL works as well)."""
        sec = self.security
        options: dict[str, Any] = {}
        if sec.user:
            options.update(user=sec.user, password=sec.password)
        if sec.token:
            options["token"] = sec.token
        if sec.creds_file:
            options["user_credentials"] = sec.creds_file
        if (context := sec.ssl_context()) is not None:
            options["tls"] = context
        return options

    async def close(self) -> None:
        """Close the connection; no reconnect after this."""
        self._closing = True
        if self._nc is not None and not self._nc.is_closed:
            # No drain: the consumers have stopped, and an event fetched but not acked is
            # simply redelivered. Draining cancelled pull subscriptions only stalls shutdown.
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=1)
            await self._nc.close()

    async def _on_error(self, error: Exception) -> None:
        log.warning("NATS error: %s", error)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return  # our own shutdown
        log.warning("disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")


async def ensure_streams(
    js: JetStreamContext,
    replicas: int = 1,
    names: Collection[str] | None = None,
    retention: Retention | None = None,
) -> None:
    """Create or update the streams `names` (default: the three event streams and
    DEADLETTER); safe to run from every replica at every start. `replicas` copies of each
    (JETSTREAM_REPLICAS); durable consumers follow the stream. Events older than
    STREAM_MAX_AGE_SECONDS (or beyond STREAM_MAX_BYTES, the oldest first) are dropped; the
    update applies changed limits to streams that already exist. DEADLETTER keeps its dead
    letters as long (docs/reliability.md, "Retention"): a replay then comes back while every
    consumer's inbox still remembers the event, so it is applied once at most.

    Args:
        js: the JetStream context.
        replicas: copies of each stream.
        names: the streams to ensure (default: all).
        retention: their age and size limits.
    """
    retention = retention or Retention()
    for name in ALL_STREAMS if names is None else names:
        config = StreamConfig(
            name=name,
            subjects=[ALL_STREAMS[name]],
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            max_age=float(retention.stream_max_age_seconds),
            max_bytes=retention.stream_max_bytes,
            num_replicas=replicas,
        )
        try:
            await js.stream_info(name)
        except NotFoundError:
            try:
                await js.add_stream(config)
                continue
            except Exception:
                pass  # another replica created it first; fall through to the update
        await js.update_stream(config)


async def ensure_durable_consumer(
    js: JetStreamContext, stream: str, durable: str, subjects: list[str]
) -> JetStreamContext.PullSubscription:
    """Create or update a durable pull consumer with explicit ack, and bind to it.

    Args:
        js: the JetStream context.
        stream: the stream to consume.
        durable: the consumer's durable name.
        subjects: the subjects it takes.

    Returns:
        The pull subscription.
    """
    config = ConsumerConfig(
        durable_name=durable,
        filter_subjects=subjects,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=30,
        # Never dropped by the server: the consumer counts deliveries itself and moves an
        # event to DEADLETTER after EVENT_MAX_DELIVER (services/common/inbox.py).
        max_deliver=-1,
        max_ack_pending=1000,
    )
    await js.add_consumer(stream, config)
    return await js.pull_subscribe_bind(durable=durable, stream=stream)
