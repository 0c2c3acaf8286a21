from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.localmesh.mesh import LocalMesh

GRPCURL = Path(sys.executable).parent / "grpcurl"


@pytest.fixture
async def credit_channel(mesh: LocalMesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(mesh.services["credit"].target) as channel:
        yield channel


def grpcurl(*args: str, data: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real grpcurl binary (reflection, JSON in and out)."""
    command = [str(GRPCURL), "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=30)


def rich_status(
    error: grpc.RpcError,
) -> tuple[error_details_pb2.ErrorInfo | None, error_details_pb2.BadRequest | None]:
    """The ErrorInfo and BadRequest details a server attached to a failed call."""
    status: status_pb2.Status | None = rpc_status.from_call(error)
    info, bad = None, None
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
    return info, bad
