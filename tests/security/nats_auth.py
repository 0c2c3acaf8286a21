"""An embedded nats-server that requires a user and password (from its config file)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from services.localmesh.embedded import EmbeddedNats, _venv_binary
from tests.deploy.manifests import render

NATS_USER = "shop"
NATS_PASSWORD = "nats-pw-7f3a9c"  # a throwaway secret the tests look for in logs


class PasswordNats(EmbeddedNats):
    name = "nats-auth"

    def _command(self) -> list[str]:
        config = self.data_dir / "auth.conf"
        config.write_text(f'authorization {{ user: "{NATS_USER}", password: "{NATS_PASSWORD}" }}\n')
        return [*super()._command(), "--config", str(config)]


def start_password_nats(folder: Path) -> PasswordNats:
    server = PasswordNats(folder, preferred_port=0)
    server.start()
    return server


class TlsNats(EmbeddedNats):
    """nats-server over TLS that verifies client certificates against `ca`."""

    name = "nats-tls"

    def __init__(self, data_dir: Path, cert: Path, key: Path, ca: Path) -> None:
        super().__init__(data_dir, preferred_port=0)
        self.cert, self.key, self.ca = cert, key, ca

    @property
    def url(self) -> str:
        return f"tls://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        return [
            *super()._command(),
            "--tlsverify",
            "--tlscert",
            str(self.cert),
            "--tlskey",
            str(self.key),
            "--tlscacert",
            str(self.ca),
        ]


# The users of deploy/k8s/base/nats-auth.conf, and the environment variable each one's
# password comes from (the Secret `shop-nats` in a cluster).
SERVICE_USERS = {
    "order": "NATS_ORDER_PASSWORD",
    "credit": "NATS_CREDIT_PASSWORD",
    "payment": "NATS_PAYMENT_PASSWORD",
}


class DeployedNats(EmbeddedNats):
    """nats-server run with the configuration files of a rendered overlay's ConfigMap
    `nats-config` (nats.conf and the nats-auth.conf it includes): only the addresses and
    paths of this machine differ (flags, which take precedence over the file, and the
    `store_dir` line, which the flag may not repeat). The passwords and SERVER_NAME come
    from the environment, as in the pod."""

    name = "nats-deployed"

    def __init__(self, data_dir: Path, config_files: dict[str, str], env: dict[str, str]) -> None:
        super().__init__(data_dir, preferred_port=0)
        self.config_files = config_files
        self.env = env

    def _prepare(self) -> None:
        store = self.data_dir / "jetstream"
        for name, text in self.config_files.items():
            lines = [
                f"  store_dir: {store}" if line.strip().startswith("store_dir:") else line
                for line in text.splitlines()
            ]
            (self.data_dir / name).write_text("\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        return [
            _venv_binary("nats-server"),
            "--addr",
            self.host,
            "--port",
            str(self.port),
            "--config",
            str(self.data_dir / "nats.conf"),
            "--pid",
            str(self.data_dir / "nats.pid"),
            "--http_port",
            "-1",  # a random free port for monitoring: 8222 may be taken
        ]

    def start(self, timeout: float = 60.0) -> None:
        saved = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)  # the child inherits them, as the pod's container does
        try:
            super().start(timeout)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def deployed_nats_config(overlay: str) -> dict[str, str]:
    """The files of the ConfigMap the rendered overlay's NATS pods mount as /etc/nats."""
    rendered = render(overlay)
    volumes = rendered.get("StatefulSet", "nats")["spec"]["template"]["spec"]["volumes"]
    name = next(v["configMap"]["name"] for v in volumes if v["name"] == "config")
    config_map = rendered.get("ConfigMap", name)
    return {file: str(text) for file, text in config_map["data"].items()}


def service_passwords() -> dict[str, str]:
    """A fresh throwaway password per service user."""
    return {service: f"nats-{service}-{secrets.token_hex(12)}" for service in SERVICE_USERS}


def start_deployed_nats(folder: Path, passwords: dict[str, str]) -> DeployedNats:
    """nats-server with base's NATS configuration and these service passwords."""
    env = {SERVICE_USERS[service]: password for service, password in passwords.items()}
    env["SERVER_NAME"] = "nats-0"
    server = DeployedNats(folder, deployed_nats_config("base"), env)
    server.start()
    return server
