from __future__ import annotations

import pytest

from services.common.settings import SettingsError
from services.credit.config import CreditSettings
from services.payment.config import PaymentSettings


def test_defaults_apply_and_database_url_is_normalised() -> None:
    settings = CreditSettings.from_env({"DATABASE_URL": "postgresql://u@db:5432/shop"})
    assert settings.core.port == 50052
    assert settings.core.database_url == "postgresql+asyncpg://u@db:5432/shop"
    assert settings.core.nats_url == "nats://127.0.0.1:4222"
    assert settings.reservation_ttl_seconds == 900


def test_every_problem_is_reported_in_one_message() -> None:
    with pytest.raises(SettingsError) as raised:
        PaymentSettings.from_env(
            {"PAYMENT_PORT": "seventy", "NATS_URL": "http://x", "LOG_LEVEL": "LOUD"}
        )
    text = str(raised.value)
    for name in ("DATABASE_URL", "PAYMENT_PORT", "NATS_URL", "LOG_LEVEL"):
        assert name in text


def test_port_range_is_checked() -> None:
    with pytest.raises(SettingsError, match="CREDIT_PORT"):
        CreditSettings.from_env({"DATABASE_URL": "postgresql://db/x", "CREDIT_PORT": "70000"})


def test_stream_replicas_default_to_one_and_are_bounded() -> None:
    base = {"DATABASE_URL": "postgresql://db/x"}
    assert CreditSettings.from_env(base).core.nats_stream_replicas == 1
    assert (
        CreditSettings.from_env({**base, "JETSTREAM_REPLICAS": "3"}).core.nats_stream_replicas == 3
    )
    for bad in ("0", "6", "three"):
        with pytest.raises(SettingsError, match="JETSTREAM_REPLICAS"):
            CreditSettings.from_env({**base, "JETSTREAM_REPLICAS": bad})


def test_the_gateway_timeout_is_read_and_must_exceed_the_latency() -> None:
    base = {"DATABASE_URL": "postgresql://db/x"}
    assert PaymentSettings.from_env(base).gateway_timeout_seconds == 10.0
    settings = PaymentSettings.from_env({**base, "PAYMENT_GATEWAY_TIMEOUT_SECONDS": "2.5"})
    assert settings.gateway_timeout_seconds == 2.5
    with pytest.raises(SettingsError, match="PAYMENT_GATEWAY_TIMEOUT_SECONDS must exceed"):
        PaymentSettings.from_env(
            {**base, "PAYMENT_GATEWAY_TIMEOUT_SECONDS": "1", "PAYMENT_GATEWAY_LATENCY_MS": "1000"}
        )
