"""EVENT_LOOP: uvloop by default, asyncio on request, a typo refused."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from services.common import eventloop


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default() -> None:
    assert eventloop.loop_factory("") is uvloop.new_event_loop
    assert issubclass(eventloop.run(_loop_type(), ""), uvloop.Loop)


def test_asyncio_on_request() -> None:
    assert eventloop.loop_factory("asyncio") is None
    assert not issubclass(eventloop.run(_loop_type(), "asyncio"), uvloop.Loop)


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="EVENT_LOOP must be one of uvloop, asyncio"):
        eventloop.loop_factory("trio")
