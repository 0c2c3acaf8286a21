"""A pod's gRPC health probe when the server runs TLS (the production overlay's mutual TLS):
Kubernetes' native `grpc:` probe speaks plaintext only. Run as an `exec` probe in the
service's container:

    python -m services.common.probe PORT SERVICE SERVER_NAME

It checks SERVICE's health on 127.0.0.1:PORT over TLS, verifying the server's certificate
against GRPC_TLS_CA for SERVER_NAME (a name on the certificate, e.g. `order`) and presenting
the service's own certificate (GRPC_TLS_CERT/KEY: any verified identity may call Health).
Exit status 0 when SERVING; 1 otherwise (NOT_SERVING, unreachable, refused), with the reason
on stderr for `kubectl describe pod`. Without GRPC_TLS_* it checks over plaintext.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.security import channel_credentials
from services.common.security_settings import GrpcTls
from services.common.settings import Env

USAGE = "usage: python -m services.common.probe PORT SERVICE SERVER_NAME [TIMEOUT_SECONDS]"


def check(port: int, service: str, server_name: str, timeout: float = 2.0) -> tuple[bool, str]:
    """(serving, what was seen) for SERVICE on 127.0.0.1:PORT, with TLS from the environment.

    Args:
        port: the service's port on 127.0.0.1.
        service: the full service name to check.
        server_name: the name its certificate must carry.
        timeout: seconds for the call.

    Returns:
        (True when SERVING, what was seen).
    """
    env = Env()
    tls = GrpcTls.read(env)
    if env.problems:
        return False, "; ".join(env.problems)
    target = f"127.0.0.1:{port}"
    credentials = channel_credentials(tls)
    if credentials is None:
        channel = grpc.insecure_channel(target)
    else:
        options = [("grpc.ssl_target_name_override", server_name)]
        channel = grpc.secure_channel(target, credentials, options=options)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            return False, f"{error.code().name}: {error.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return response.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str]) -> int:
    """Check a service's gRPC health over (mutual) TLS; 0 when SERVING.

    Args:
        argv: the program name, the port, the service name, then the certificate files.

    Returns:
        The exit status: 0 SERVING, 1 otherwise, 2 for bad arguments.
    """
    if len(argv) not in (4, 5) or not argv[1].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    timeout = float(argv[4]) if len(argv) == 5 else 2.0
    serving, seen = check(int(argv[1]), argv[2], argv[3], timeout)
    if not serving:
        print(f"{argv[2]} on port {argv[1]}: {seen}", file=sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
