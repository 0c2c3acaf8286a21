"""NATS with credentials: the services' connection authenticates by settings (NATS_USER /
NATS_PASSWORD, or user:password in NATS_URL), a wrong password is refused, and the password
never reaches the log; NATS over TLS with a client certificate (NATS_TLS_*). Real
nats-servers that require them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import nats
import pytest
from nats.errors import NoServersError

from services.common.jetstream import Messaging
from services.common.security_settings import NatsSecurity
from services.order.config import OrderSettings
from tests.security.certs import Pki
from tests.security.nats_auth import (
    NATS_PASSWORD,
    NATS_USER,
    PasswordNats,
    TlsNats,
    start_password_nats,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def password_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordNats]:
    server = start_password_nats(tmp_path_factory.mktemp("nats-auth"))
    yield server
    server.stop()


async def connect_messaging(messaging: Messaging, within: float) -> bool:
    task = asyncio.create_task(messaging.connect())
    try:
        await asyncio.wait_for(asyncio.shield(messaging.ready.wait()), within)
        return True
    except TimeoutError:
        return False
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await messaging.close()


async def test_settings_credentials_connect_and_create_the_streams(
    password_nats: PasswordNats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    messaging = Messaging(
        password_nats.url, "shop-test", NatsSecurity(user=NATS_USER, password=NATS_PASSWORD)
    )
    assert await connect_messaging(messaging, within=30)
    assert NATS_PASSWORD not in caplog.text


async def test_credentials_in_the_url_work_and_are_redacted_in_the_log(
    password_nats: PasswordNats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = f"nats://{NATS_USER}:{NATS_PASSWORD}@127.0.0.1:{password_nats.port}"
    assert await connect_messaging(Messaging(url, "shop-test"), within=30)
    assert "connected to NATS at nats://shop:***@127.0.0.1" in caplog.text
    assert NATS_PASSWORD not in caplog.text


async def test_a_wrong_password_is_refused(
    password_nats: PasswordNats, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises((nats.errors.Error, NoServersError)) as refused:
        await nats.connect(
            password_nats.url,
            user=NATS_USER,
            password="wrong-password",
            allow_reconnect=False,
            connect_timeout=5,
        )
    assert "authorization" in str(refused.value).lower() or isinstance(
        refused.value, NoServersError
    )
    caplog.set_level(logging.INFO)
    url = f"nats://{NATS_USER}:wrong-pw-4411@127.0.0.1:{password_nats.port}"
    # the service keeps retrying (the NATS error is logged) but never gets in
    assert not await connect_messaging(Messaging(url, "shop-test"), within=3)
    assert "Authorization Violation" in caplog.text
    assert "wrong-pw-4411" not in caplog.text


async def test_no_credentials_is_refused(password_nats: PasswordNats) -> None:
    assert not await connect_messaging(Messaging(password_nats.url, "shop-test"), within=3)


@pytest.fixture(scope="module")
def tls_nats(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsNats]:
    server_cert = pki.ca.issue("nats")
    server = TlsNats(
        tmp_path_factory.mktemp("nats-tls"), server_cert.cert, server_cert.key, pki.ca.cert
    )
    server.start()
    yield server
    server.stop()


async def test_nats_over_tls_with_a_client_certificate_from_settings(
    tls_nats: TlsNats, pki: Pki
) -> None:
    settings = OrderSettings.from_env(
        {
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres",
            "NATS_URL": tls_nats.url,
            "NATS_TLS_CA": str(pki.ca.cert),
            "NATS_TLS_CERT": str(pki.order.cert),
            "NATS_TLS_KEY": str(pki.order.key),
        }
    ).core
    messaging = Messaging(settings.nats_url, "shop-test", settings.nats_security)
    assert await connect_messaging(messaging, within=30)


async def test_nats_over_tls_refuses_a_client_without_a_certificate(
    tls_nats: TlsNats, pki: Pki
) -> None:
    only_ca = NatsSecurity(tls_ca=str(pki.ca.cert))
    assert not await connect_messaging(Messaging(tls_nats.url, "shop-test", only_ca), within=3)
    foreign = NatsSecurity(
        tls_ca=str(pki.ca.cert), tls_cert=str(pki.stranger.cert), tls_key=str(pki.stranger.key)
    )
    assert not await connect_messaging(Messaging(tls_nats.url, "shop-test", foreign), within=3)
