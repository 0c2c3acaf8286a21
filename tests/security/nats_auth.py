"""An embedded nats-server that requires a user and password (from its config file)."""

from __future__ import annotations

from pathlib import Path

from services.localmesh.embedded import EmbeddedNats

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
