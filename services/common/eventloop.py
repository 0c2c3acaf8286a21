"""The event loop a service runs on: uvloop when installed (measured faster, see
docs/performance.md), the standard asyncio loop when EVENT_LOOP=asyncio or uvloop is missing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

CHOICES = ("uvloop", "asyncio")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """None means asyncio's default loop. Raises ValueError for an unknown choice (the
    settings refuse one first: CoreSettings.event_loop).

    Args:
        choice: `uvloop` or `asyncio` (EVENT_LOOP).

    Returns:
        A factory for asyncio.run's `loop_factory`, or None for the default loop.
    """
    choice = choice.strip() or "uvloop"
    if choice not in CHOICES:
        raise ValueError(f"EVENT_LOOP must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """asyncio.run on the chosen loop.

    Args:
        main: the coroutine to run to completion.
        choice: the event loop (EVENT_LOOP).

    Returns:
        What `main` returns.
    """
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
