"""Security settings from the environment: gRPC TLS / mutual TLS, the authorization policy
and NATS credentials. All optional: with none set, gRPC and NATS are plaintext (the local
default of `make run` and the tests). Read at start and validated with clear messages;
secrets (passwords, key material) never appear in a message.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from services.common.settings import Env

ANY_IDENTITY = "*"

# Off unless set: their absence is a setting (plaintext, no NATS credentials), so a manifest
# may leave them out (tests/deploy checks every other variable a service reads is set).
SECURITY_VARIABLES = frozenset(
    {
        "GRPC_TLS_CERT",
        "GRPC_TLS_KEY",
        "GRPC_TLS_CA",
        "GRPC_TLS_CLIENT_AUTH",
        "GRPC_AUTHZ_RULES",
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TOKEN",
        "NATS_CREDS",
        "NATS_TLS_CA",
        "NATS_TLS_CERT",
        "NATS_TLS_KEY",
    }
)


def redact_url(url: str) -> str:
    """The URL with its password (if any) replaced by ***; safe to log. Outside a database
    URL a user without a password is a token (nats://TOKEN@host, as nats-py reads it): ***
    too; a database user alone is no secret (`make run` prints where to connect).

    Args:
        url: a URL.

    Returns:
        The URL, safe to log.
    """
    try:
        parts = urlsplit(url)
        token = parts.username is not None and not parts.scheme.startswith("postgres")
        if parts.password is None and not token:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        user = "" if parts.password is None else f"{parts.username or ''}:"
        netloc = f"{user}***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # a URL too broken to parse: say nothing of it
        return "<unparsable URL>"


def redact_urls(urls: str) -> str:
    """A comma-separated list of URLs (NATS_URL), each redacted.

    Args:
        urls: comma-separated URLs.

    Returns:
        The same, each safe to log.
    """
    return ",".join(redact_url(url.strip()) for url in urls.split(","))


def _readable_file(env: Env, name: str) -> str:
    """The path in `name` ("" when unset); a problem when it is not a readable file."""
    path = env.environ.get(name, "").strip()
    if not path:
        return ""
    try:
        with Path(path).open("rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        env.problems.append(f"{name}: file {path} does not exist")
    except IsADirectoryError:
        env.problems.append(f"{name}: {path} is a directory, not a file")
    except OSError as error:
        env.problems.append(f"{name}: cannot read {path} ({error.strerror or error})")
    else:
        return path
    return ""


def _check_pem(env: Env, name: str, path: str, kind: str) -> None:
    if path and b"-----BEGIN " not in Path(path).read_bytes():
        env.problems.append(f"{name}: {path} is not a PEM file (expected a {kind})")


@dataclass(frozen=True, slots=True)
class GrpcTls:
    """The service's certificate and key (served, and presented as a client by Payment), the
    CA that signs peers, and whether callers must present a certificate (mutual TLS)."""

    cert_file: str
    key_file: str
    ca_file: str  # "" = the system roots verify servers; no client certificates checked
    require_client_cert: bool

    def cert_chain(self) -> bytes:
        """The certificate chain, read now."""
        return Path(self.cert_file).read_bytes()

    def private_key(self) -> bytes:
        """The private key, read now."""
        return Path(self.key_file).read_bytes()

    def root_certificates(self) -> bytes | None:
        """The CA bundle that verifies peers, if one is set."""
        return Path(self.ca_file).read_bytes() if self.ca_file else None

    @classmethod
    def read(cls, env: Env) -> GrpcTls | None:
        """TLS from GRPC_TLS_*; None when it is off."""
        cert = _readable_file(env, "GRPC_TLS_CERT")
        key = _readable_file(env, "GRPC_TLS_KEY")
        ca = _readable_file(env, "GRPC_TLS_CA")
        client_auth = env.choice("GRPC_TLS_CLIENT_AUTH", "none", ("none", "require"))
        named = {
            name
            for name in ("GRPC_TLS_CERT", "GRPC_TLS_KEY", "GRPC_TLS_CA")
            if env.environ.get(name, "").strip()
        }
        if not named:
            if client_auth == "require":
                env.problems.append(
                    "GRPC_TLS_CLIENT_AUTH=require needs GRPC_TLS_CERT, GRPC_TLS_KEY and GRPC_TLS_CA"
                )
            return None  # plaintext
        if "GRPC_TLS_CERT" not in named or "GRPC_TLS_KEY" not in named:
            missing = sorted({"GRPC_TLS_CERT", "GRPC_TLS_KEY"} - named)
            env.problems.append(
                f"gRPC TLS needs both GRPC_TLS_CERT and GRPC_TLS_KEY; not set: {', '.join(missing)}"
            )
        if client_auth == "require" and "GRPC_TLS_CA" not in named:
            env.problems.append(
                "GRPC_TLS_CLIENT_AUTH=require needs GRPC_TLS_CA (the CA that signs client "
                "certificates)"
            )
        _check_pem(env, "GRPC_TLS_CERT", cert, "certificate")
        _check_pem(env, "GRPC_TLS_KEY", key, "private key")
        _check_pem(env, "GRPC_TLS_CA", ca, "CA certificate")
        if cert and key:
            try:  # the key must be the certificate's: catch a mix-up now, not at a handshake
                ssl.create_default_context().load_cert_chain(cert, key)
            except (ssl.SSLError, ValueError) as error:
                env.problems.append(
                    f"GRPC_TLS_KEY does not match GRPC_TLS_CERT or cannot be loaded "
                    f"({getattr(error, 'reason', None) or type(error).__name__})"
                )
        if ca:
            try:
                ssl.create_default_context().load_verify_locations(ca)
            except ssl.SSLError as error:
                env.problems.append(
                    f"GRPC_TLS_CA: {ca} holds no usable CA certificate ({error.reason})"
                )
        return cls(cert, key, ca, client_auth == "require")


@dataclass(frozen=True, slots=True)
class AuthzRule:
    """One rule: the methods it covers and the identities it allows."""

    pattern: str  # "/pkg.Service/Method", "/pkg.Service/*" or "*"
    identities: frozenset[str]  # "*" = any verified identity

    def specificity(self, method: str) -> int:
        """How closely this rule names `method`: 2 exact, 1 its service, 0 any; -1 no match."""
        if self.pattern == method:
            return 2
        if self.pattern.endswith("/*") and method.startswith(self.pattern[:-1]):
            return 1
        return 0 if self.pattern == "*" else -1


@dataclass(frozen=True, slots=True)
class AuthzPolicy:
    """Who (the verified identity of the mTLS peer) may call which method. The most specific
    rule for a method decides; a method no rule names is refused."""

    rules: tuple[AuthzRule, ...]

    def allowed(self, method: str, identities: frozenset[str]) -> bool:
        """Whether `identities` may call `method` (the most specific rule decides)."""
        best, chosen = -1, None
        for rule in self.rules:
            score = rule.specificity(method)
            if score > best:
                best, chosen = score, rule
        if chosen is None or not identities:
            return False
        return ANY_IDENTITY in chosen.identities or bool(chosen.identities & identities)

    @classmethod
    def parse(cls, text: str) -> tuple[AuthzPolicy, list[str]]:
        """The rules of GRPC_AUTHZ_RULES, and what is wrong with the text."""
        rules: list[AuthzRule] = []
        problems: list[str] = []
        for raw in text.split(";"):
            entry = raw.strip()
            if not entry:
                continue
            pattern, sep, who = (part.strip() for part in entry.partition("="))
            identities = frozenset(i.strip() for i in who.split(",") if i.strip())
            valid_pattern = pattern == "*" or (
                pattern.startswith("/") and pattern.count("/") == 2 and not pattern.endswith("/")
            )
            if not sep or not identities or not valid_pattern:
                problems.append(
                    f"GRPC_AUTHZ_RULES: bad rule {entry!r}; expected "
                    "'/pkg.Service/Method=id1,id2', '/pkg.Service/*=ids' or '*=ids'"
                )
                continue
            if any(r.pattern == pattern for r in rules):
                problems.append(f"GRPC_AUTHZ_RULES: {pattern} appears in two rules")
                continue
            rules.append(AuthzRule(pattern, identities))
        return cls(tuple(rules)), problems

    @classmethod
    def read(cls, env: Env, tls: GrpcTls | None) -> AuthzPolicy | None:
        """None when callers are not authenticated (no mutual TLS): the network is then the
        boundary. With mutual TLS and no rules, any verified identity may call anything."""
        text = env.environ.get("GRPC_AUTHZ_RULES", "").strip()
        if tls is None or not tls.require_client_cert:
            if text:
                env.problems.append(
                    "GRPC_AUTHZ_RULES needs mutual TLS (GRPC_TLS_CLIENT_AUTH=require): "
                    "without it no caller identity is verified"
                )
            return None
        policy, problems = cls.parse(text or "*=*")
        env.problems.extend(problems)
        return policy


@dataclass(frozen=True, slots=True)
class NatsSecurity:
    """How we authenticate to NATS and verify it. Everything optional; user:password in
    NATS_URL also works (nats-py reads it), and is redacted in logs like the rest."""

    user: str = ""
    password: str = ""
    token: str = ""
    creds_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    def __repr__(self) -> str:  # never show secrets, even in a debug dump
        return (
            f"NatsSecurity(user={self.user!r}, password={'***' if self.password else ''!r}, "
            f"token={'***' if self.token else ''!r}, creds_file={self.creds_file!r}, "
            f"tls_ca={self.tls_ca!r}, tls_cert={self.tls_cert!r}, tls_key={self.tls_key!r})"
        )

    @property
    def tls(self) -> bool:
        """Whether NATS is reached over TLS."""
        return bool(self.tls_ca or self.tls_cert)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for NATS, or None without TLS."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca or None)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    @classmethod
    def read(cls, env: Env) -> NatsSecurity:
        """NATS credentials and TLS from NATS_USER, NATS_PASSWORD, NATS_TLS_*."""
        user = env.environ.get("NATS_USER", "").strip()
        password = env.environ.get("NATS_PASSWORD", "")
        token = env.environ.get("NATS_TOKEN", "").strip()
        creds = _readable_file(env, "NATS_CREDS")
        tls_ca = _readable_file(env, "NATS_TLS_CA")
        tls_cert = _readable_file(env, "NATS_TLS_CERT")
        tls_key = _readable_file(env, "NATS_TLS_KEY")
        if bool(user) != bool(password):
            env.problems.append("NATS_USER and NATS_PASSWORD must be set together")
        methods = [
            n for n, v in (("NATS_USER", user), ("NATS_TOKEN", token), ("NATS_CREDS", creds)) if v
        ]
        if len(methods) > 1:
            env.problems.append(f"choose one NATS authentication, not {' and '.join(methods)}")
        if bool(env.environ.get("NATS_TLS_CERT", "").strip()) != bool(
            env.environ.get("NATS_TLS_KEY", "").strip()
        ):
            env.problems.append("NATS_TLS_CERT and NATS_TLS_KEY must be set together")
        elif tls_cert and tls_key:
            try:
                ssl.create_default_context().load_cert_chain(tls_cert, tls_key)
            except (ssl.SSLError, ValueError):
                env.problems.append("NATS_TLS_KEY does not match NATS_TLS_CERT or cannot be loaded")
        return cls(user, password, token, creds, tls_ca, tls_cert, tls_key)
