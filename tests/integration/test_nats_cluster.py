"""The production shape of NATS (deploy/k8s/production): a 3-member JetStream cluster with
routes, and the services' streams created with JETSTREAM_REPLICAS=3, so an event is still
published and kept when one member is down."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.errors import NoStreamResponseError

from services.common.events import STREAMS
from services.common.jetstream import Messaging
from services.localmesh.embedded import find_free_port

MEMBERS = 3
DEADLINE = 90.0


def nats_server() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    assert beside.exists(), "nats-server comes with the local extra (make venv)"
    return str(beside)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    client_ports = [find_free_port(0)[0] for _ in range(MEMBERS)]
    route_ports = [find_free_port(0)[0] for _ in range(MEMBERS)]
    routes = ", ".join(f"nats://127.0.0.1:{port}" for port in route_ports)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(MEMBERS):
            conf = tmp_path / f"nats-{i}.conf"
            conf.write_text(
                f"server_name: nats-{i}\n"
                f"listen: 127.0.0.1:{client_ports[i]}\n"
                f"jetstream {{ store_dir: {tmp_path / f'js-{i}'}, sync_interval: always }}\n"
                f"cluster {{ name: shop, listen: 127.0.0.1:{route_ports[i]},"
                f" routes: [{routes}] }}\n"
            )
            log = (tmp_path / f"nats-{i}.log").open("wb")
            processes.append(
                subprocess.Popen([nats_server(), "-c", str(conf)], stdout=log, stderr=log)
            )
        yield [f"nats://127.0.0.1:{port}" for port in client_ports], processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
async def connected(
    cluster: tuple[list[str], list[subprocess.Popen[bytes]]],
) -> AsyncIterator[tuple[Messaging, list[subprocess.Popen[bytes]]]]:
    urls, processes = cluster
    messaging = Messaging(",".join(urls), "cluster-test", replicas=MEMBERS)
    # connect() retries until the cluster has elected a meta leader and the streams exist
    await asyncio.wait_for(messaging.connect(), DEADLINE)
    try:
        yield messaging, processes
    finally:
        await messaging.close()


async def test_streams_are_replicated_on_every_member(
    connected: tuple[Messaging, list[subprocess.Popen[bytes]]],
) -> None:
    messaging, _ = connected
    for name in STREAMS:
        info = await messaging.js.stream_info(name)
        assert info.config.num_replicas == MEMBERS
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == MEMBERS - 1  # the leader + two followers


async def test_events_are_published_and_kept_with_one_member_down(
    connected: tuple[Messaging, list[subprocess.Popen[bytes]]],
) -> None:
    messaging, processes = connected
    stream, pattern = next(iter(STREAMS.items()))
    subject = pattern.replace(">", "probe").replace("*", "probe")
    processes[0].terminate()
    processes[0].wait(timeout=20)
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while True:  # the client reconnects to a live member; the stream may elect a new leader
        try:
            ack = await messaging.js.publish(subject, b"kept", timeout=2)
            break
        except (NoStreamResponseError, nats.errors.TimeoutError, nats.errors.NoRespondersError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    assert ack.stream == stream
    message = await messaging.js.get_msg(stream, ack.seq)
    assert message.data == b"kept"
