"""OpenTelemetry traces, configured only by the standard `OTEL_*` variables.

Off unless an exporter is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_TRACES_EXPORTER=otlp|console`; never with
`OTEL_SDK_DISABLED=true`): then no interceptor is installed, no span is made and no context is
read, so tracing off costs one boolean test where a context would be stored or read.

On: gRPC server and client spans (opentelemetry-instrumentation-grpc), the span context
active at a state change stored with the outbox row as the event's `traceparent` header, and a
consumer span per applied event continuing that trace. One saga is one trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

ENABLED = False
_provider: Any = None

TRACEPARENT = "traceparent"


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment configures a trace exporter.

    Args:
        environ: the environment (default: the process's).

    Returns:
        True when an OTEL_* setting asks for an exporter.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        exporter
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def setup(service: str) -> bool:
    """Install the SDK's tracer provider when the environment asks for traces.

    Args:
        service: the service's name (`service.name` of its spans).

    Returns:
        True when tracing is on.
    """
    global ENABLED, _provider
    if not configured():
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler: OTEL_TRACES_*
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    exporter: Any
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        protocol = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    ENABLED = True
    log.info("tracing on: exporting spans (%s)", exporter_name)
    return True


def shutdown() -> None:
    """Flush what is buffered (on a graceful stop)."""
    global ENABLED, _provider
    if _provider is not None:
        _provider.shutdown()
    _provider = None
    ENABLED = False


def server_interceptors() -> list[Any]:
    """The OpenTelemetry gRPC server interceptor (outermost), or none when tracing is off.
    Health checks make no spans: probes call them every few seconds.

    Returns:
        The interceptors to put outermost.
    """
    if not ENABLED:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    health = filters.negate(filters.service_prefix("grpc.health"))
    return [aio_server_interceptor(filter_=health)]  # type: ignore[no-untyped-call]


def client_interceptors() -> list[Any]:
    """The OpenTelemetry client interceptors when tracing is on; none otherwise.

    Returns:
        The interceptors for outgoing channels.
    """
    if not ENABLED:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span (None when off or outside a span).

    Returns:
        The traceparent header value, or None.
    """
    if not ENABLED:
        return None
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


def log_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the active span, for log lines.

    Returns:
        (trace_id, span_id), or None outside a span.
    """
    if not ENABLED:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


@contextlib.contextmanager
def consumer_span(
    consumer: str, subject: str, event_id: str, headers: Mapping[str, str] | None
) -> Iterator[None]:
    """A CONSUMER span for one event, child of the producer's `traceparent` (a new trace if it
    has none); nothing at all when tracing is off.

    Args:
        consumer: the durable consumer's name.
        subject: the event's subject.
        event_id: the event's id.
        headers: the message's headers (its `traceparent`).

    Returns:
        A context manager around the event's handling.
    """
    if not ENABLED:
        yield
        return
    from opentelemetry import propagate, trace

    parent = propagate.extract(dict(headers or {}))
    tracer = trace.get_tracer("services.common.inbox")
    with tracer.start_as_current_span(
        f"{subject} process",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.destination.name": subject,
            "messaging.message.id": event_id,
            "messaging.consumer.group.name": consumer,
        },
    ):
        yield


@contextlib.contextmanager
def server_span(method: str, headers: Mapping[str, str]) -> Iterator[None]:
    """A SERVER span for one call of the Connect door, child of the caller's `traceparent`
    (the gRPC door's spans come from the OpenTelemetry interceptor); nothing when off.

    Args:
        method: the full method path.
        headers: the request's headers (its `traceparent`).

    Returns:
        A context manager around the call.
    """
    if not ENABLED:
        yield
        return
    from opentelemetry import propagate, trace

    service, _, name = method.lstrip("/").rpartition("/")
    tracer = trace.get_tracer("services.common.connect")
    with tracer.start_as_current_span(
        method.lstrip("/"),
        context=propagate.extract(dict(headers)),
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "connect_rpc", "rpc.service": service, "rpc.method": name},
    ):
        yield
