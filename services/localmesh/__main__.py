"""`make run`: the whole mesh on this machine, with nothing installed beforehand.

Embedded NATS and PostgreSQL (data kept in .data/) unless NATS_URL / DATABASE_URL name
external ones; then the three services. Ctrl-C stops everything.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from services.common.security_settings import redact_url, redact_urls
from services.localmesh.mesh import LocalMesh, MeshError

DATA_DIR = Path(os.environ.get("MESH_DATA_DIR", ".data"))
TARGETS_FILE = DATA_DIR / "targets.json"
HTTP_FILE = DATA_DIR / "http_ports.json"
CUSTOMER = "a8098c1a-f86e-11da-bd1a-00112444be1e"
REQUEST = "5f0c3b8e-1d1f-4c55-9a55-0b6f1c1e2a01"


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def _relative(path: Path) -> str:
    """Shortest way to name `path` from here, so the examples copy-paste cleanly."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def banner(mesh: LocalMesh) -> str:
    grpcurl = Path(sys.executable).parent / "grpcurl"
    grpcurl_cmd = _relative(grpcurl) if grpcurl.exists() else "grpcurl"
    credit = mesh.services["credit"].target
    shopctl = Path(sys.executable).parent / "shopctl"
    shopctl_cmd = _relative(shopctl) if shopctl.exists() else "shopctl"
    if (mesh.nats_url or "") != "nats://127.0.0.1:4222" or any(
        s.target != f"127.0.0.1:{port}"
        for s, port in zip(mesh.services.values(), (50051, 50052, 50053), strict=True)
    ):
        # A port was busy and another taken: point shopctl at what runs.
        targets = " ".join(f"--{s.name}={s.target}" for s in mesh.services.values())
        shopctl_cmd += f" {targets} --nats={redact_urls(mesh.nats_url or '')}"
    lines = [
        "",
        "The mesh is up:",
        *(f"  {s.name:<8} {s.target:<18} {s.service_name}" for s in mesh.services.values()),
        *(
            f"  {s.name:<8} http://{s.http_address:<18} Connect (HTTP/JSON), /metrics, /healthz"
            for s in mesh.services.values()
        ),
        f"  NATS     {redact_urls(mesh.nats_url or '')}",
        f"  Postgres {redact_url(mesh.database_url or '')}",  # a password shows as ***
        f"  logs     {DATA_DIR / 'logs'}/<service>.log",
        "",
        "Try it (in another terminal):",
        f"  {grpcurl_cmd} -plaintext {credit} list",
        f"  {grpcurl_cmd} -plaintext {credit} describe shop.credit.v1.CreditService",
        f'  {grpcurl_cmd} -plaintext -d \'{{"customer_id": "{CUSTOMER}",'
        f' "amount": {{"currency_code": "USD", "minor_units": 15000}},'
        f' "request_id": "{REQUEST}"}}\' {credit} shop.credit.v1.CreditService/TopUpCredits',
        f'  {grpcurl_cmd} -plaintext -d \'{{"customer_id": "{CUSTOMER}"}}\''
        f" {credit} shop.credit.v1.CreditService/GetCreditAccount",
        f'  {grpcurl_cmd} -plaintext -d \'{{"service": "shop.credit.v1.CreditService"}}\''
        f" {credit} grpc.health.v1.Health/Check",
        "",
        "Or over HTTP and JSON (the Connect protocol, the same RPCs):",
        f"  curl -sS -H 'Content-Type: application/json' -d '{{\"customer_id\": \"{CUSTOMER}\"}}'"
        f" http://{mesh.services['credit'].http_address}/shop.credit.v1.CreditService/GetCreditAccount",
        "",
        "Or operate it with shopctl (defaults reach this mesh; --json for scripts):",
        f"  {shopctl_cmd} status",
        f"  {shopctl_cmd} credits show {CUSTOMER}",
        f"  {shopctl_cmd} events tail 'payments.>'",
        f"  {shopctl_cmd} orders timeline <order id>",
        f"  {shopctl_cmd} deadletters list",
        "",
        "Or run the whole seed story (reject, top up, reserve, pay, refund): make demo",
        "  (over HTTP/JSON, printing the curl of each step: make demo-http)",
        "",
        "Press Ctrl-C to stop everything.",
    ]
    return "\n".join(lines)


def main() -> int:
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    mesh = LocalMesh(
        data_dir=DATA_DIR.resolve(),
        database_url=os.environ.get("DATABASE_URL") or None,
        nats_url=os.environ.get("NATS_URL") or None,
        extra_env={"LOG_FORMAT": os.environ.get("LOG_FORMAT", "text")},
        echo=lambda line: print(line, flush=True),
        progress=say,
    )
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    say(f"data folder: {DATA_DIR.resolve()} (make clean-data wipes it)")
    try:
        mesh.start()
    except MeshError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        print(f"error: could not start the mesh: {error}", file=sys.stderr)
        return 1
    # Where the demo (and anyone scripting against the mesh) finds the services.
    TARGETS_FILE.write_text(
        json.dumps({name: service.target for name, service in mesh.services.items()})
    )
    HTTP_FILE.write_text(
        json.dumps({name: service.http_port for name, service in mesh.services.items()})
    )
    print(banner(mesh), flush=True)
    exit_code = 0
    while not stop_requested:
        crashed = [s for s in mesh.services.values() if s.process and s.process.poll() is not None]
        if crashed:
            for service in crashed:
                print(
                    f"error: {service.name} service exited; see {service.log_path}", file=sys.stderr
                )
            exit_code = 1
            break
        time.sleep(0.5)
    say("stopping the mesh")
    TARGETS_FILE.unlink(missing_ok=True)
    HTTP_FILE.unlink(missing_ok=True)
    mesh.stop()
    say("stopped; nothing left running")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
