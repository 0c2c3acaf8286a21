"""WatchOrder's use case (DESIGN §11): the order now, then again after every change of its
status, until the order can change no more or the watch's time is up."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

from services.order.domain.model import TERMINAL, TRANSITIONS, Order, OrderStatus
from services.order.service_layer.ports import Changes, StatusChange


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


def apply_change(order: Order, change: StatusChange) -> Order:
    """The order after `change`: items, total and customer never change."""
    return dataclasses.replace(
        order,
        status=change.status,
        reservation_id=change.reservation_id,
        payment_id=change.payment_id,
        failure_reason=change.failure_reason,
        updated_at=change.updated_at,
    )


async def follow(
    first: Order,
    changes: Changes,
    read: Callable[[], Awaitable[Order]],
    seconds: float,
) -> AsyncIterator[Order]:
    """`first`, then the order after each change of its status; ends at a terminal status
    or after `seconds`. `read` reads the order again (after the listener reconnected)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    current = first
    yield current
    while current.status not in TERMINAL:
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
        if RANK[candidate.status] > RANK[current.status]:
            current = candidate
            yield current
