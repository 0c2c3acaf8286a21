"""Structured logging: one JSON object per line, carrying the current request id, and the
trace and span ids whenever a span is active (tracing on: services/common/tracing.py)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from services.common import tracing

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id and, while a span is active, the trace."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if request_id := request_id_var.get():
            entry["request_id"] = request_id
        if (ids := tracing.log_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        # Extra fields passed as logger.info("...", extra={...}) become top-level keys.
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal (`LOG_FORMAT=text`)."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)-7s {service} %(name)s: %(message)s")


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Send the process's logs to stderr in `fmt` at `level`.

    Args:
        service: the service's name, on every line.
        level: DEBUG, INFO, WARNING or ERROR.
        fmt: `json` (one object per line) or `text`.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Neither format prints the caller's file and line, thread or process: don't collect
    # them for every record (the logging HOWTO's "Optimization"; a frame walk per line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Library chatter at INFO drowns the service's own lines.
    for noisy in ("nats", "sqlalchemy", "asyncio", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
