"""WatchOrder's use case (DESIGN §11): the order now, then again after every change of its
status, until the order can change no more or the watch's time is up."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

from services.order.adapters.repository import StoredOrder
from services.order.adapters.status_feed import StatusChange, Subscription
from services.order.domain.model import TERMINAL, TRANSITIONS, OrderStatus


def _ranks() -> dict[OrderStatus, int]:
    """Each status's distance from PENDING along the longest path of the status graph.
    Every transition raises it, and no status is visited twice, so a change whose rank is
    not above the one last sent is one the stream has already shown (a notification of a
    change the first read had seen)."""
    rank = dict.fromkeys(OrderStatus, 0)
    for _ in OrderStatus:  # relax along the edges; the graph has no cycles
        for (before, _trigger), after in TRANSITIONS.items():
            rank[after] = max(rank[after], rank[before] + 1)
    return rank


RANK = _ranks()


def apply_change(stored: StoredOrder, change: StatusChange) -> StoredOrder:
    """The order after `change`: items, total and customer never change."""
    order = dataclasses.replace(
        stored.order,
        status=change.status,
        reservation_id=change.reservation_id,
        payment_id=change.payment_id,
        failure_reason=change.failure_reason,
    )
    return StoredOrder(order, stored.created_at, change.updated_at)


async def follow(
    first: StoredOrder,
    changes: Subscription,
    read: Callable[[], Awaitable[StoredOrder]],
    seconds: float,
) -> AsyncIterator[StoredOrder]:
    """`first`, then the order after each change of its status; ends at a terminal status
    or after `seconds`. `read` reads the order again (after the listener reconnected)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    current = first
    yield current
    while current.order.status not in TERMINAL:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            # wait_for, not asyncio.timeout around the loop: a timeout must not fire while
            # the generator is suspended at a yield, inside the caller's write.
            change = await asyncio.wait_for(changes.next(), remaining)
        except TimeoutError:
            return
        if change is None or change.reread:
            candidate = await read()
        else:
            candidate = apply_change(current, change)
        if RANK[candidate.order.status] > RANK[current.order.status]:
            current = candidate
            yield current
