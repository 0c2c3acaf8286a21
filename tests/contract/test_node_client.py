"""A second gRPC implementation: the Node.js client of tests/node_client (@grpc/grpc-js and
@grpc/proto-loader, pinned by its package-lock.json) loads proto/ directly and runs
top-up -> order -> watch until RESERVED -> pay -> watch until PAID -> get against the live
mesh, watching the order with WatchOrder (a server stream) instead of polling it.

Its dependencies are installed with `npm ci` into tests/node_client/node_modules (git-ignored)
and kept there while package-lock.json is unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from services.localmesh.mesh import LocalMesh
from tests.contract.descriptors import PROTO_DIR, ROOT

pytestmark = pytest.mark.e2e

CLIENT_DIR = ROOT / "tests" / "node_client"
STAMP = CLIENT_DIR / "node_modules" / ".installed-lock-sha256"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not on PATH: the Node.js client test needs Node.js and npm")
    return found


@pytest.fixture(scope="session")
def node_client() -> Path:
    """`npm ci` once per package-lock.json; the installed tree is reused across runs."""
    lock = hashlib.sha256((CLIENT_DIR / "package-lock.json").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != lock:
        result = subprocess.run(
            [tool("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CLIENT_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        STAMP.write_text(lock)
    return CLIENT_DIR / "client.js"


def test_the_node_client_runs_the_saga(node_client: Path, mesh: LocalMesh) -> None:
    env = {
        **os.environ,
        "PROTO_DIR": str(PROTO_DIR),
        "ORDER_TARGET": mesh.services["order"].target,
        "CREDIT_TARGET": mesh.services["credit"].target,
        "PAYMENT_TARGET": mesh.services["payment"].target,
    }
    result = subprocess.run(
        [tool("node"), str(node_client)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["order_status"] == "ORDER_STATUS_PAID"
    assert summary["watched"] in (
        ["ORDER_STATUS_PENDING", "ORDER_STATUS_RESERVED", "ORDER_STATUS_PAID"],
        ["ORDER_STATUS_RESERVED", "ORDER_STATUS_PAID"],
    ), summary["watched"]
    assert summary["payment_status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert summary["available"] == str(10000 - 4321)
    assert summary["spent"] == "4321"
