"""Free ports for the local mesh and the tests are picked where no outgoing connection can
take them before the server binds them: below the OS's ephemeral range."""

from __future__ import annotations

import random
import socket

import pytest

from services.localmesh.embedded import (
    LOWEST_PICKED_PORT,
    ephemeral_port_range,
    find_free_port,
)


def test_a_picked_port_is_free_and_outside_the_ephemeral_range() -> None:
    low, high = ephemeral_port_range()
    assert low <= high
    for _ in range(20):
        port, preferred = find_free_port(0)
        assert not preferred
        assert LOWEST_PICKED_PORT <= port < low
        with socket.socket() as server:  # and a server can bind it
            server.bind(("127.0.0.1", port))


def test_a_busy_preferred_port_gives_way_to_a_free_one() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        port, preferred = find_free_port(taken)
        assert not preferred
        assert port != taken


def test_a_port_is_never_picked_twice_even_before_its_server_binds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two picks for one process (its gRPC and its HTTP port) come before either server binds:
    both ports look free, so only memory keeps the second pick off the first (here the
    random pick always offers the same port)."""
    first, _ = find_free_port(0)
    monkeypatch.setattr(random, "randrange", lambda low, high: first)
    second, _ = find_free_port(0)
    assert second != first
