"""Other gRPC implementations, as outside clients in Node.js (tests/node_client, pinned by its
package-lock.json), run top-up -> order -> wait RESERVED -> pay -> get against the live mesh:

- client.js (@grpc/grpc-js, @grpc/proto-loader) loads proto/ directly, no generated code, and
  waits with WatchOrder (a server stream) instead of polling;
- typed_client.ts is compiled with tsc against the TypeScript that the repository's
  buf.gen.yaml generates (`buf generate`, protoc-gen-es from npm: the Connect-ES stack), and
  calls over gRPC with @connectrpc/connect-node. A misspelled field fails the compilation.

Their dependencies are installed with `npm ci` into tests/node_client/node_modules
(git-ignored) and kept there while package-lock.json is unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
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


def generate_and_compile(folder: Path, client_source: str) -> subprocess.CompletedProcess[str]:
    """buf generate (the repository's buf.gen.yaml) into `folder`/gen-ts, then tsc."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "typed_client.ts").write_text(client_source)
    shutil.copy(CLIENT_DIR / "tsconfig.json", folder / "tsconfig.json")
    (folder / "package.json").write_text('{"type": "module"}\n')  # ES modules, as generated
    (folder / "node_modules").symlink_to(CLIENT_DIR / "node_modules")
    bin_dir = CLIENT_DIR / "node_modules" / ".bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    buf = Path(sys.executable).with_name("buf")
    generated = subprocess.run(
        [str(buf), "generate", "--output", str(folder)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stderr
    assert (folder / "gen-ts" / "shop" / "payment" / "v1" / "payment_service_pb.ts").exists()
    return subprocess.run(
        [str(bin_dir / "tsc"), "-p", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_typed_client_compiles_against_buf_generate_and_runs_the_saga(
    node_client: Path, mesh: LocalMesh, tmp_path: Path
) -> None:
    compiled = generate_and_compile(tmp_path, (CLIENT_DIR / "typed_client.ts").read_text())
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    env = {
        **os.environ,
        "ORDER_TARGET": mesh.services["order"].target,
        "CREDIT_TARGET": mesh.services["credit"].target,
        "PAYMENT_TARGET": mesh.services["payment"].target,
        "ORDER_HTTP": mesh.services["order"].http_address,
        "PAYMENT_HTTP": mesh.services["payment"].http_address,
    }
    result = subprocess.run(
        [tool("node"), str(tmp_path / "dist" / "typed_client.js")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["order_status"] == "PAID"
    assert summary["payment_status"] == "SUCCEEDED"
    assert summary["payment_method"] == "GOOGLE_PAY"
    assert summary["connect_watched"] == "PAID"  # the Connect-ES client over the HTTP door


def test_a_field_the_contract_does_not_have_fails_the_compilation(
    node_client: Path, tmp_path: Path
) -> None:
    source = (CLIENT_DIR / "typed_client.ts").read_text()
    assert "    customerId,\n    amount:" in source
    broken = source.replace(
        "    customerId,\n    amount:", "    customer: customerId,\n    amount:"
    )
    compiled = generate_and_compile(tmp_path, broken)
    assert compiled.returncode != 0
    assert "customer" in compiled.stdout, compiled.stdout
