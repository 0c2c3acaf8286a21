"""The PostgreSQL password (and NATS's) never appears in what a service prints: not when it
runs (see test_secure_mesh), not when the database is unreachable or refuses it, not on a
configuration error. Each case starts a real service process and reads all its output."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from services.localmesh.embedded import find_free_port
from tests.conftest import Infra

pytestmark = pytest.mark.e2e

DB_PASSWORD = "pg-secret-9d1e77"
NATS_PASSWORD = "nats-secret-51ab0c"


def service_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "NATS_"))}
    env.update({"PYTHONUNBUFFERED": "1", "CREDIT_PORT": "0", "LOG_LEVEL": "DEBUG"})
    env.update(overrides)
    return env


def url_with_password(url: str, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'postgres'}:{DB_PASSWORD}@{parts.hostname}:{parts.port}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def run_until(env: dict[str, str], marker: str, log: Path, timeout: float = 60.0) -> str:
    """Start the Credit service; stop it once `marker` is printed (or it exits); its output."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.credit"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None and marker not in log.read_text(errors="replace"):
                assert time.monotonic() < deadline, f"no {marker!r}:\n{log.read_text()}"
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait(15)
    return log.read_text(errors="replace")


def test_an_unreachable_database_does_not_leak_the_password(tmp_path: Path) -> None:
    closed_port, _ = find_free_port(0)  # nothing listens there
    url = f"postgresql://shop:{DB_PASSWORD}@127.0.0.1:{closed_port}/shop"
    output = run_until(
        service_env(DATABASE_URL=url, NATS_URL=f"nats://shop:{NATS_PASSWORD}@127.0.0.1:1"),
        "database not reachable yet",
        tmp_path / "credit.log",
    )
    assert "database not reachable yet" in output
    assert DB_PASSWORD not in output
    assert NATS_PASSWORD not in output


def test_a_database_error_at_start_does_not_leak_the_password(infra: Infra, tmp_path: Path) -> None:
    """A database that does not exist: not a transient error, the service stops with a
    traceback; neither it nor anything else shows the URL's password."""
    url = url_with_password(infra.database_url, database="no_such_database_here")
    output = run_until(
        service_env(DATABASE_URL=url, NATS_URL="nats://127.0.0.1:1"),
        # the traceback's last line (stopping at "Traceback" could read it half written)
        'database "no_such_database_here" does not exist',
        tmp_path / "credit.log",
    )
    assert "Traceback" in output
    assert "no_such_database_here" in output  # the real error is reported…
    assert DB_PASSWORD not in output  # …without the password


@pytest.mark.parametrize(
    "overrides",
    [
        {"DATABASE_URL": f"mysql://root:{DB_PASSWORD}@db:3306/shop"},
        {"DATABASE_URL": f"postgresql://shop:{DB_PASSWORD}@db/shop", "LOG_LEVEL": "LOUD"},
        {
            "DATABASE_URL": f"postgresql://shop:{DB_PASSWORD}@db/shop",
            "NATS_URL": f"http://shop:{NATS_PASSWORD}@nats:4222",
        },
    ],
    ids=["bad-scheme", "other-setting", "bad-nats-url"],
)
def test_a_settings_error_does_not_leak_the_password(
    overrides: dict[str, str], tmp_path: Path
) -> None:
    env = service_env(**overrides)
    result = subprocess.run(
        [sys.executable, "-m", "services.credit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "configuration error" in output
    assert DB_PASSWORD not in output
    assert NATS_PASSWORD not in output


def test_make_run_banner_shows_the_urls_without_passwords(tmp_path: Path) -> None:
    from services.localmesh.__main__ import banner
    from services.localmesh.mesh import LocalMesh, ServiceProcess

    mesh = LocalMesh(
        data_dir=tmp_path,
        database_url=f"postgresql://shop:{DB_PASSWORD}@db:5432/shop",
        nats_url=f"nats://shop:{NATS_PASSWORD}@nats:4222",
    )
    for port, name in enumerate(("order", "credit", "payment"), start=1):
        mesh.services[name] = ServiceProcess(name, port, tmp_path / f"{name}.log")
    text = banner(mesh)
    assert "postgresql://shop:***@db:5432/shop" in text
    assert "nats://shop:***@nats:4222" in text
    assert DB_PASSWORD not in text
    assert NATS_PASSWORD not in text
