"""The security settings are optional, validated at start, and never echo a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.security_settings import (
    SECURITY_VARIABLES,
    AuthzPolicy,
    redact_url,
    redact_urls,
)
from services.common.settings import SettingsError
from services.order.config import OrderSettings
from services.payment.config import PaymentSettings
from tests.security.certs import Pki

BASE = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres"}


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as error:
        OrderSettings.from_env({**BASE, **env})
    return error.value.problems


def mtls_env(pki: Pki) -> dict[str, str]:
    return {
        "GRPC_TLS_CERT": str(pki.order.cert),
        "GRPC_TLS_KEY": str(pki.order.key),
        "GRPC_TLS_CA": str(pki.ca.cert),
        "GRPC_TLS_CLIENT_AUTH": "require",
    }


def test_plaintext_is_the_default() -> None:
    core = OrderSettings.from_env(BASE).core
    assert core.grpc_tls is None
    assert core.authz is None
    assert not core.nats_security.tls


def test_mutual_tls_with_default_policy_lets_any_verified_identity_in(pki: Pki) -> None:
    core = OrderSettings.from_env({**BASE, **mtls_env(pki)}).core
    assert core.grpc_tls is not None
    assert core.grpc_tls.require_client_cert
    assert core.authz is not None
    assert core.authz.allowed("/shop.order.v1.OrderService/GetOrder", frozenset({"anyone"}))
    assert not core.authz.allowed("/shop.order.v1.OrderService/GetOrder", frozenset())


def test_payment_reads_the_same_tls_settings(pki: Pki) -> None:
    core = PaymentSettings.from_env({**BASE, **mtls_env(pki)}).core
    assert core.grpc_tls is not None
    assert core.grpc_tls.cert_file == str(pki.order.cert)


def test_missing_and_unreadable_files_are_named(pki: Pki, tmp_path: Path) -> None:
    found = problems(
        {
            "GRPC_TLS_CERT": str(tmp_path / "nope.crt"),
            "GRPC_TLS_KEY": str(tmp_path),
            "GRPC_TLS_CA": str(pki.ca.cert),
        }
    )
    assert any("GRPC_TLS_CERT" in p and "does not exist" in p for p in found)
    assert any("GRPC_TLS_KEY" in p and "is a directory" in p for p in found)


def test_a_key_without_a_certificate_is_refused(pki: Pki) -> None:
    found = problems({"GRPC_TLS_KEY": str(pki.order.key)})
    assert any(
        "needs both GRPC_TLS_CERT and GRPC_TLS_KEY; not set: GRPC_TLS_CERT" in p for p in found
    )
    found = problems({"GRPC_TLS_CA": str(pki.ca.cert)})
    assert any("not set: GRPC_TLS_CERT, GRPC_TLS_KEY" in p for p in found)


def test_a_key_that_is_not_the_certificates_is_refused(pki: Pki) -> None:
    found = problems({"GRPC_TLS_CERT": str(pki.order.cert), "GRPC_TLS_KEY": str(pki.credit.key)})
    assert any("GRPC_TLS_KEY does not match GRPC_TLS_CERT" in p for p in found)


def test_files_that_are_not_pem_are_refused(pki: Pki, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    found = problems(
        {
            "GRPC_TLS_CERT": str(pki.order.cert),
            "GRPC_TLS_KEY": str(pki.order.key),
            "GRPC_TLS_CA": str(junk),
        }
    )
    assert any("GRPC_TLS_CA" in p and "not a PEM file" in p for p in found)


def test_client_auth_needs_a_ca(pki: Pki) -> None:
    found = problems(
        {
            "GRPC_TLS_CERT": str(pki.order.cert),
            "GRPC_TLS_KEY": str(pki.order.key),
            "GRPC_TLS_CLIENT_AUTH": "require",
        }
    )
    assert any("GRPC_TLS_CLIENT_AUTH=require needs GRPC_TLS_CA" in p for p in found)
    assert any("GRPC_TLS_CLIENT_AUTH" in p for p in problems({"GRPC_TLS_CLIENT_AUTH": "maybe"}))


def test_authorization_rules_need_mutual_tls() -> None:
    found = problems({"GRPC_AUTHZ_RULES": "*=client"})
    assert any("GRPC_AUTHZ_RULES needs mutual TLS" in p for p in found)


def test_bad_authorization_rules_are_named(pki: Pki) -> None:
    found = problems({**mtls_env(pki), "GRPC_AUTHZ_RULES": "GetOrder=payment;*=;*=a;*=b"})
    assert any("bad rule 'GetOrder=payment'" in p for p in found)
    assert any("bad rule '*='" in p for p in found)
    assert any("* appears in two rules" in p for p in found)


def test_the_most_specific_rule_decides() -> None:
    policy, found = AuthzPolicy.parse(
        "/s.v1.S/Get=payment,client; /s.v1.S/*=client; /grpc.health.v1.Health/*=*"
    )
    assert not found
    assert policy.allowed("/s.v1.S/Get", frozenset({"payment"}))
    assert not policy.allowed("/s.v1.S/Create", frozenset({"payment"}))
    assert policy.allowed("/s.v1.S/Create", frozenset({"client", "localhost"}))
    assert policy.allowed("/grpc.health.v1.Health/Check", frozenset({"anyone"}))
    assert not policy.allowed("/other.v1.O/Get", frozenset({"client"}))  # no rule: refused


def test_nats_credentials_are_validated_and_never_shown(tmp_path: Path) -> None:
    found = problems({"NATS_USER": "shop"})
    assert "NATS_USER and NATS_PASSWORD must be set together" in found
    found = problems({"NATS_USER": "shop", "NATS_PASSWORD": "pw", "NATS_TOKEN": "t0k"})
    assert any("choose one NATS authentication" in p for p in found)
    found = problems({"NATS_CREDS": str(tmp_path / "shop.creds")})
    assert any("NATS_CREDS" in p and "does not exist" in p for p in found)
    core = OrderSettings.from_env({**BASE, "NATS_USER": "shop", "NATS_PASSWORD": "s3cr3t-nats"})
    assert core.core.nats_security.password == "s3cr3t-nats"
    assert "s3cr3t-nats" not in repr(core)


def test_urls_are_redacted() -> None:
    assert redact_url("nats://shop:s3cr3t@nats:4222") == "nats://shop:***@nats:4222"
    assert redact_url("postgresql://u:p%40ss@[::1]:5432/db") == "postgresql://u:***@[::1]:5432/db"
    assert redact_url("nats://nats:4222") == "nats://nats:4222"
    assert redact_urls("nats://a:pw1@h1:1, nats://b:pw2@h2:2") == (
        "nats://a:***@h1:1,nats://b:***@h2:2"
    )
    found = problems({"NATS_URL": "http://shop:s3cr3t@nats:4222"})
    assert not any("s3cr3t" in p for p in found)
    assert any("http://shop:***@nats:4222" in p for p in found)


def test_security_variables_lists_exactly_what_is_read() -> None:
    """tests/deploy lets manifests leave these out; the list must not drift from the code."""
    from tests.deploy.services_spec import SERVICES

    for spec in SERVICES.values():
        read, _ = spec.reads({})
        security = {n for n in read if n.startswith(("GRPC_TLS_", "GRPC_AUTHZ_", "NATS_"))}
        assert security - {"NATS_URL"} == SECURITY_VARIABLES


def test_a_token_in_the_url_is_redacted() -> None:
    """nats://TOKEN@host: nats-py sends a user without a password as a token."""
    assert redact_url("nats://s3cr3t-t0ken@nats:4222") == "nats://***@nats:4222"
    assert redact_url("tls://s3cr3t-t0ken@nats:4222") == "tls://***@nats:4222"
    assert redact_urls("nats://s3cr3t-t0ken@h1:1,nats://h2:2") == "nats://***@h1:1,nats://h2:2"
    # A database user alone is no secret (make run prints where to connect).
    assert redact_url("postgresql://shop@db:5432/shop") == "postgresql://shop@db:5432/shop"
    found = problems({"NATS_URL": "http://s3cr3t-t0ken@nats:4222"})  # a wrong scheme too
    assert not any("s3cr3t" in p for p in found)
    assert any("http://***@nats:4222" in p for p in found)


def test_the_settings_repr_shows_no_password_token_or_key() -> None:
    settings = PaymentSettings.from_env(
        {
            "DATABASE_URL": "postgresql://shop:db-s3cr3t@db:5432/shop",
            "NATS_URL": "nats://nats-t0ken@nats:4222,nats://u:nats-s3cr3t@nats2:4222",
            "PAGE_TOKEN_KEY": "page-key-" + "x" * 40,
        }
    )
    shown = repr(settings)
    for secret in ("db-s3cr3t", "nats-t0ken", "nats-s3cr3t", "page-key-"):
        assert secret not in shown
    assert "postgresql+asyncpg://shop:***@db:5432/shop" in shown
    assert "nats://***@nats:4222,nats://u:***@nats2:4222" in shown
    assert settings.core.database_url == "postgresql+asyncpg://shop:db-s3cr3t@db:5432/shop"


def test_the_page_token_key_is_set_or_derived_from_the_database_url() -> None:
    key = "k" * 40
    assert OrderSettings.from_env({**BASE, "PAGE_TOKEN_KEY": key}).core.page_token_key == (
        key.encode()
    )
    derived = OrderSettings.from_env(BASE).core.page_token_key
    assert len(derived) == 32  # every replica on this database derives the same key ...
    assert derived == OrderSettings.from_env(BASE).core.page_token_key
    other = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:2/postgres"}
    assert OrderSettings.from_env(other).core.page_token_key != derived  # ... no one else
    found = problems({"PAGE_TOKEN_KEY": "too-short"})
    assert any("PAGE_TOKEN_KEY must be at least 32 characters" in p for p in found)
    assert not any("too-short" in p for p in found)
