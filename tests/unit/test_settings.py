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


def test_retention_defaults_keep_a_week_of_events_and_a_day_of_sent_outbox_rows() -> None:
    retention = CreditSettings.from_env({"DATABASE_URL": "postgresql://db/x"}).core.retention
    week = 7 * 24 * 3600
    assert retention.stream_max_age_seconds == week
    assert retention.stream_max_bytes == -1  # unlimited: the age bounds the streams
    assert retention.outbox_seconds == 24 * 3600
    assert retention.inbox_seconds == week
    assert retention.idempotency_seconds == week


def test_an_inbox_kept_shorter_than_the_streams_is_refused() -> None:
    """An event still in the stream but no longer in the inbox would be applied twice on
    a redelivery or a replay."""
    base = {"DATABASE_URL": "postgresql://db/x"}
    shorter = r"INBOX_RETENTION_SECONDS \(\d+\) must be at least STREAM_MAX_AGE_SECONDS"
    with pytest.raises(SettingsError, match=shorter):
        CreditSettings.from_env({**base, "INBOX_RETENTION_SECONDS": "86400"})
    with pytest.raises(SettingsError, match=shorter):
        PaymentSettings.from_env({**base, "STREAM_MAX_AGE_SECONDS": str(30 * 24 * 3600)})
    longer = CreditSettings.from_env(
        {**base, "STREAM_MAX_AGE_SECONDS": "86400", "INBOX_RETENTION_SECONDS": "86400"}
    )
    assert longer.core.retention.inbox_seconds == longer.core.retention.stream_max_age_seconds


def test_streams_keep_at_least_the_duplicate_window_and_a_sane_size() -> None:
    base = {"DATABASE_URL": "postgresql://db/x"}
    for name, bad in (
        ("STREAM_MAX_AGE_SECONDS", "60"),  # shorter than the 10-minute duplicate window
        ("STREAM_MAX_BYTES", "0"),
        ("STREAM_MAX_BYTES", "4096"),
        ("OUTBOX_RETENTION_SECONDS", "-1"),
        ("IDEMPOTENCY_RETENTION_SECONDS", "week"),
    ):
        with pytest.raises(SettingsError, match=name):
            CreditSettings.from_env({**base, name: bad})
    sized = CreditSettings.from_env({**base, "STREAM_MAX_BYTES": str(2**34)})
    assert sized.core.retention.stream_max_bytes == 2**34


def test_the_gateway_timeout_is_read_and_must_exceed_the_latency() -> None:
    base = {"DATABASE_URL": "postgresql://db/x"}
    assert PaymentSettings.from_env(base).gateway_timeout_seconds == 10.0
    settings = PaymentSettings.from_env({**base, "PAYMENT_GATEWAY_TIMEOUT_SECONDS": "2.5"})
    assert settings.gateway_timeout_seconds == 2.5
    with pytest.raises(SettingsError, match="PAYMENT_GATEWAY_TIMEOUT_SECONDS must exceed"):
        PaymentSettings.from_env(
            {**base, "PAYMENT_GATEWAY_TIMEOUT_SECONDS": "1", "PAYMENT_GATEWAY_LATENCY_MS": "1000"}
        )


def test_event_max_deliver_defaults_to_five_and_is_bounded() -> None:
    base = {"DATABASE_URL": "postgresql://db/x"}
    assert CreditSettings.from_env(base).core.event_max_deliver == 5
    settings = CreditSettings.from_env({**base, "EVENT_MAX_DELIVER": "3"})
    assert settings.core.event_max_deliver == 3
    for bad in ("0", "-1", "many"):
        with pytest.raises(SettingsError, match="EVENT_MAX_DELIVER"):
            CreditSettings.from_env({**base, "EVENT_MAX_DELIVER": bad})


def test_the_outbox_sweep_waits_ten_seconds_and_stays_inside_the_duplicate_window() -> None:
    base = {"DATABASE_URL": "postgresql://db/x"}
    assert CreditSettings.from_env(base).core.outbox_sweep_after_seconds == 10.0
    settings = CreditSettings.from_env({**base, "OUTBOX_SWEEP_AFTER_SECONDS": "2.5"})
    assert settings.core.outbox_sweep_after_seconds == 2.5
    for bad in ("-1", "301", "soon"):  # JetStream forgets a message id after 600 s
        with pytest.raises(SettingsError, match="OUTBOX_SWEEP_AFTER_SECONDS"):
            CreditSettings.from_env({**base, "OUTBOX_SWEEP_AFTER_SECONDS": bad})


def test_the_watch_bounds_are_read_and_checked() -> None:
    from services.order.config import OrderSettings

    base = {"DATABASE_URL": "postgresql://db/x"}
    default = OrderSettings.from_env(base)
    assert (default.watch_max_streams, default.watch_max_seconds) == (1000, 300.0)
    tuned = OrderSettings.from_env({**base, "WATCH_MAX_STREAMS": "5", "WATCH_MAX_SECONDS": "2.5"})
    assert (tuned.watch_max_streams, tuned.watch_max_seconds) == (5, 2.5)
    for name, bad in (
        ("WATCH_MAX_STREAMS", "0"),
        ("WATCH_MAX_SECONDS", "0"),
        ("WATCH_MAX_STREAMS", "x"),
    ):
        with pytest.raises(SettingsError, match=name):
            OrderSettings.from_env({**base, name: bad})
