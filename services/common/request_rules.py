"""Every request checked against its `buf.validate` rules (protovalidate), before any handler.

The rules live in proto/ next to the fields (the contract, readable by clients in any
language); this interceptor enforces them on every unary call of every service with one
cached `protovalidate.Validator`, once per call. A request that breaks a rule is refused with
INVALID_ARGUMENT: `InvalidArgument` with one `FieldViolation` per broken rule, which the outer
`ServerInterceptor` turns into `ErrorInfo` + `google.rpc.BadRequest`. Cross-field business
rules (one currency per order, a total that fits) stay in the domain.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import protovalidate
from buf.validate import validate_pb2
from google.protobuf.message import Message

from services.common.errors import FieldViolation
from services.common.validation import refuse

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]

# One validator for the process: it compiles each message type's rules once and caches them.
_VALIDATOR = protovalidate.Validator()
_MESSAGE_ONEOF = "message.oneof"


def field_path(violation: protovalidate.Violation) -> str:
    """The violation's field as google.rpc.BadRequest spells it: `items[0].unit_price`.

    Args:
        violation: one broken rule.

    Returns:
        The field's path.
    """
    path = violation.proto.field
    if path is None:
        return ""
    parts: list[str] = []
    for element in path.elements:
        name = element.field_name or str(element.field_number)
        parts.append(f".{name}" if parts else name)
        subscript = element.subscript
        if subscript is not None:
            parts.append(f"[{subscript.value}]")
    return "".join(parts)


def _broken_oneofs(request: Message) -> list[list[str]]:
    """The fields of each message-level `oneof` rule the request breaks (none set when one is
    required, or more than one set), in declaration order, the order protovalidate reports
    them in. Its violation names no field; the BadRequest names each field of the group."""
    descriptor: Any = request.DESCRIPTOR
    rules = descriptor.GetOptions().Extensions[validate_pb2.message]
    broken: list[list[str]] = []
    for rule in rules.oneof:
        fields = list(rule.fields)
        present = sum(1 for name in fields if _is_set(request, descriptor.fields_by_name[name]))
        if present > 1 or (present == 0 and rule.required):
            broken.append(fields)
    return broken


def _is_set(request: Message, field: Any) -> bool:
    if field.has_presence:
        return request.HasField(field.name)
    value = getattr(request, field.name)
    return len(value) > 0 if field.is_repeated else bool(value)


def violations_of(request: Message) -> list[FieldViolation]:
    """Every rule the request breaks, in the order protovalidate reports them.

    Args:
        request: a request message.

    Returns:
        One FieldViolation per broken rule; empty when the request is valid.
    """
    found: list[FieldViolation] = []
    oneofs: list[list[str]] | None = None
    for violation in _VALIDATOR.collect_violations(request):
        proto = violation.proto
        message = proto.message or proto.rule_id or "is invalid"
        path = field_path(violation)
        if not path and proto.rule_id == _MESSAGE_ONEOF:
            oneofs = _broken_oneofs(request) if oneofs is None else oneofs
            group = oneofs.pop(0) if oneofs else []
            found += [FieldViolation(name, message) for name in group]
            if group:
                continue
        found.append(FieldViolation(path, message))
    return found


def check(request: Message) -> None:
    """Raise InvalidArgument naming every field of `request` that breaks its rules.

    Args:
        request: a request message.
    """
    refuse(violations_of(request))


class RequestRulesInterceptor(grpc.aio.ServerInterceptor):
    """Validates each unary request against its `buf.validate` rules before the handler.

    The wrapped handler is built once per method and reused (gRPC looks the handler up for
    every call and hands back the same one), so a call costs the validation alone."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Check the request of our unary and server-streaming handlers before they run."""
        handler = await continuation(handler_call_details)
        if handler is None or not (
            handler.unary_unary is not None or inspect.isasyncgenfunction(handler.unary_stream)
        ):
            # client streams (reflection) and health's Watch (a coroutine writing to its
            # context, not a generator) carry no rules of ours
            return handler
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped: grpc.RpcMethodHandler[Any, Any]
        if handler.unary_unary is not None:
            inner: Handler = handler.unary_unary  # type: ignore[assignment]

            async def validated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                check(request)
                return await inner(request, context)

            wrapped = grpc.unary_unary_rpc_method_handler(
                validated,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        else:  # a server stream (WatchOrder): checked before its first message
            inner_stream: Any = handler.unary_stream

            async def validated_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                check(request)
                async for response in inner_stream(request, context):
                    yield response

            wrapped = grpc.unary_stream_rpc_method_handler(
                validated_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        self._wrapped[method] = (handler, wrapped)
        return wrapped
