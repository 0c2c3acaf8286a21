"""docs/clients.md works as written: its Python blocks, in order, are one script run against
the live mesh (plaintext); its TLS block also opens a mutual-TLS channel to a real TLS server
with throwaway certificates and makes a call over it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.grpc_server import create_server
from services.common.security import server_credentials
from services.common.security_settings import GrpcTls
from services.localmesh.mesh import LocalMesh
from tests.security.certs import make_pki

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "clients.md"


def blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", GUIDE.read_text(), re.MULTILINE | re.DOTALL)


def run(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_the_guide_has_its_sections_and_code() -> None:
    text = GUIDE.read_text()
    for topic in ("Deadlines", "request_id", "ErrorInfo", "BadRequest", "Watching", "TLS"):
        assert topic in text, topic
    assert "order_stub.WatchOrder(" in text  # waiting watches the order, no polling
    assert "## Over HTTP and JSON (Connect)" in text
    assert len(blocks()) >= 5


def test_every_python_block_runs_against_the_mesh(mesh: LocalMesh, tmp_path: Path) -> None:
    script = "\n\n".join(blocks()) + '\n\nprint("guide ok")\n'
    env = {
        "ORDER_TARGET": mesh.services["order"].target,
        "CREDIT_TARGET": mesh.services["credit"].target,
        "PAYMENT_TARGET": mesh.services["payment"].target,
        "CREDIT_HTTP": mesh.services["credit"].http_address,
        "SHOP_CA_FILE": "",
    }
    result = run(script, env, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("guide ok")


def test_the_tls_block_opens_a_mutual_tls_channel(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = GrpcTls(str(pki.order.cert), str(pki.order.key), str(pki.ca.cert), True)
    imports, channel_block = blocks()[0], next(b for b in blocks() if "def open_channel" in b)
    check = (
        "from grpc_health.v1 import health_pb2, health_pb2_grpc\n"
        "health = health_pb2_grpc.HealthStub(open_channel(ORDER))\n"
        "print(health.Check(health_pb2.HealthCheckRequest(), timeout=10).status)\n"
    )

    async def scenario() -> subprocess.CompletedProcess[str]:
        server = await create_server(
            "127.0.0.1:0", [], ["shop.order.v1.OrderService"], credentials=server_credentials(tls)
        )
        await server.set_serving(True)
        try:
            env = {
                "ORDER_TARGET": f"localhost:{server.port}",
                "SHOP_CA_FILE": str(pki.ca.cert),
                "SHOP_CERT_FILE": str(pki.client.cert),
                "SHOP_KEY_FILE": str(pki.client.key),
            }
            script = f"{imports}\n\n{channel_block}\n\n{check}"
            return await asyncio.to_thread(run, script, env, tmp_path)
        finally:
            await server.stop(0)

    result = asyncio.run(scenario())
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1] == "1"  # SERVING
