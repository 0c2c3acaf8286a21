"""The order-status feed of one Order process: one connection LISTENs on the channel the
`orders` trigger NOTIFYs (migration 0002), and every WatchOrder stream of the process
subscribes here to its order's changes. A change committed by any replica reaches every
process's listener, in commit order.

A notification can be missed only while the listener is not connected. So whenever it
(re)connects, every subscription is told to read its order again (`None` in its queue)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from services.common.errors import ResourceExhausted
from services.order.domain.model import OrderStatus
from services.order.service_layer.ports import StatusChange

log = logging.getLogger(__name__)

CHANNEL = "shop_order_status"
RETRY_SECONDS = 1.0
PING_SECONDS = 15.0  # a listener on a silently dead connection would hear nothing forever


def parse_change(payload: str) -> StatusChange:
    """The trigger's JSON payload (migration 0002) as a change."""
    data = json.loads(payload)
    return StatusChange(
        order_id=str(data["order_id"]),
        status=OrderStatus(data["status"]),
        reservation_id=str(data["reservation_id"] or ""),
        payment_id=str(data["payment_id"] or ""),
        failure_reason=str(data["failure_reason"] or ""),
        updated_at=datetime.fromisoformat(data["updated_at"]),
        reread=bool(data["reread"]),
    )


class WatchLimitReached(ResourceExhausted):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this server already serves {limit} WatchOrder streams (WATCH_MAX_STREAMS);"
            " retry later or poll GetOrder",
            "WATCH_LIMIT_REACHED",
            {"max_streams": str(limit)},
        )


class Subscription:
    """The changes of one order as one stream hears them; `None`: read the order again."""

    # At most a few changes per order (its status graph is short) plus reconnects.
    MAX_QUEUED = 32

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        self._queue: asyncio.Queue[StatusChange | None] = asyncio.Queue()

    def put(self, change: StatusChange | None) -> None:
        if self._queue.qsize() < self.MAX_QUEUED:
            self._queue.put_nowait(change)
        else:  # cannot happen in the status graph; never lose the news, read instead
            self._queue = asyncio.Queue()
            self._queue.put_nowait(None)

    async def next(self) -> StatusChange | None:
        return await self._queue.get()


class StatusFeed:
    """One listening connection per process, fanned out to every subscription; at most
    `max_streams` subscriptions at once (WatchLimitReached beyond)."""

    def __init__(self, engine: AsyncEngine, max_streams: int) -> None:
        self._engine = engine
        self.max_streams = max_streams
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._open = 0
        self.listening = asyncio.Event()

    @property
    def open_streams(self) -> int:
        return self._open

    @contextlib.contextmanager
    def subscribe(self, order_id: str) -> Iterator[Subscription]:
        """Subscribe before reading the order: a change committed after the read is heard."""
        if self._open >= self.max_streams:
            raise WatchLimitReached(self.max_streams)
        subscription = Subscription(order_id)
        self._subscriptions.setdefault(order_id, set()).add(subscription)
        self._open += 1
        try:
            yield subscription
        finally:
            self._open -= 1
            listeners = self._subscriptions.get(order_id)
            if listeners is not None:
                listeners.discard(subscription)
                if not listeners:
                    del self._subscriptions[order_id]

    def _on_notification(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            change = parse_change(payload)
        except (ValueError, KeyError, TypeError):
            log.error("unreadable %s notification %r; ignored", CHANNEL, payload[:200])
            return
        for subscription in self._subscriptions.get(change.order_id, ()):
            subscription.put(change)

    def _reread_all(self) -> None:
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription.put(None)

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after a lost connection."""
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("order-status listener lost (%s); reconnecting", type(error).__name__)
            finally:
                self.listening.clear()
            await asyncio.sleep(RETRY_SECONDS)

    async def _listen(self) -> None:
        # A connection of the service's pool (its TLS, its search path), kept for good and
        # closed, never returned, when the listener stops: no pooled connection LISTENs.
        lent = await self._engine.raw_connection()
        try:
            driver: Any = lent.driver_connection
            lost = asyncio.Event()
            driver.add_termination_listener(lambda conn: lost.set())
            await driver.add_listener(CHANNEL, self._on_notification)
            self.listening.set()
            self._reread_all()  # whatever changed while nobody listened
            log.info("listening for order-status changes on %s", CHANNEL)
            while not driver.is_closed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), PING_SECONDS)
                    break
                await asyncio.wait_for(driver.fetchval("SELECT 1"), PING_SECONDS)
            raise ConnectionError("the listening connection closed")
        finally:
            await greenlet_spawn(lent.invalidate)
