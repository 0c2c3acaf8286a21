"""TLS credentials for every gRPC server and client, and the authorization interceptor that
decides on the VERIFIED identity of a mutual-TLS peer (docs/security.md has the trust model).

One mechanism for the three services: `runtime.serve` builds the server's credentials and
interceptor from `CoreSettings`, Payment's channels take `channel_credentials`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.common.errors import PermissionDenied
from services.common.grpc_server import abort_with_status, to_rpc_status
from services.common.security_settings import AuthzPolicy, GrpcTls

log = logging.getLogger(__name__)

# The auth_context properties that name a verified peer (X.509 subject CN and every SAN).
IDENTITY_PROPERTIES = ("x509_common_name", "x509_subject_alternative_name")


def server_credentials(tls: GrpcTls) -> grpc.ServerCredentials:
    """The server's certificate; with mutual TLS, callers must present one signed by the CA.

    Args:
        tls: the TLS settings (GRPC_TLS_*).

    Returns:
        The server credentials.
    """
    return grpc.ssl_server_credentials(
        [(tls.private_key(), tls.cert_chain())],
        root_certificates=tls.root_certificates(),
        require_client_auth=tls.require_client_cert,
    )


def channel_credentials(tls: GrpcTls | None) -> grpc.ChannelCredentials | None:
    """For outgoing channels: verify the server against the CA and present our certificate
    (the service's own), so mutual-TLS servers can tell who calls. None = plaintext.

    Args:
        tls: the TLS settings, or None.

    Returns:
        The channel credentials, or None for plaintext.
    """
    if tls is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates(),
        private_key=tls.private_key(),
        certificate_chain=tls.cert_chain(),
    )


def peer_identities(context: grpc.aio.ServicerContext[Any, Any]) -> frozenset[str]:
    """The names the TLS handshake verified for the caller: its certificate's CN and SANs.
    Empty on a plaintext connection (nothing is verified there).

    Args:
        context: the call's context.

    Returns:
        The verified names (empty without TLS).
    """
    auth = context.auth_context()
    names: set[str] = set()
    for prop in IDENTITY_PROPERTIES:
        for value in auth.get(prop, ()):
            names.add(value.decode(errors="replace") if isinstance(value, bytes) else str(value))
    return frozenset(names)


class NotAuthorized(PermissionDenied):
    """A caller whose verified identity no rule allows for this method (PERMISSION_DENIED)."""

    def __init__(self, method: str, identities: frozenset[str]) -> None:
        super().__init__(
            f"the caller is not allowed to call {method}",
            "CALLER_NOT_AUTHORIZED",
            {"method": method, "caller": ",".join(sorted(identities)) or "(unverified)"},
        )


def refusal(policy: AuthzPolicy, method: str, identities: frozenset[str]) -> NotAuthorized | None:
    """Whether the policy refuses the caller, the one decision both doors (gRPC and Connect)
    make; a refusal is logged.

    Args:
        policy: the authorization rules.
        method: the full method path (`/shop.payment.v1.PaymentService/ProcessPayment`).
        identities: the caller's verified names (empty when nothing is verified).

    Returns:
        The error to answer with, or None when the call is allowed.
    """
    if policy.allowed(method, identities):
        return None
    log.warning(
        "refused %s to %s",
        method,
        ",".join(sorted(identities)) or "an unverified caller",
        extra={"rpc": method, "caller": sorted(identities)},
    )
    return NotAuthorized(method, identities)


Continuation = Callable[
    [grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]
]


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a call (PERMISSION_DENIED, ErrorInfo reason CALLER_NOT_AUTHORIZED) unless the
    policy lets one of the peer's verified identities call the method. Wraps every kind of
    handler (health Watch and reflection are streams), so no method escapes the policy."""

    def __init__(self, policy: AuthzPolicy) -> None:
        self.policy = policy

    def _check(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        refused = refusal(self.policy, method, peer_identities(context))
        return None if refused is None else to_rpc_status(refused)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Refuse a call whose verified identity the rules do not allow."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        check = self._check

        def guard(inner: Any) -> Any:
            if inspect.isasyncgenfunction(inner):

                async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                    if (refusal := check(method, context)) is not None:
                        await abort_with_status(context, refusal)
                    async for response in inner(request, context):
                        yield response

                return stream

            async def unary(request: Any, context: Any) -> Any:
                if (refusal := check(method, context)) is not None:
                    await abort_with_status(context, refusal)
                return await inner(request, context)

            return unary

        kinds = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }
        inner = (
            handler.unary_unary
            or handler.unary_stream
            or handler.stream_unary
            or handler.stream_stream
        )
        make = kinds[(handler.request_streaming, handler.response_streaming)]
        return make(
            guard(inner),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
