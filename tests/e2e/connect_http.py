"""A Connect client in the standard library alone, as curl or a browser would call the mesh:
HTTP/1.1 POSTs of JSON (or binary protobuf), Connect error bodies read as JSON, and server
streams read as Connect envelopes. Nothing of the server's code is used to talk to it."""

from __future__ import annotations

import base64
import http.client
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.rpc import error_details_pb2

END_STREAM = 0x02


@dataclass
class Answer:
    """One HTTP answer: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        """The Connect error code ("" for a success)."""
        return str(self.json().get("code", "")) if self.status != 200 else ""

    def details(self) -> dict[str, bytes]:
        """type name → the detail's bytes, of a Connect error body."""
        found: dict[str, bytes] = {}
        for detail in self.json().get("details", []):
            value = detail["value"]
            found[detail["type"]] = base64.b64decode(value + "=" * (-len(value) % 4))
        return found

    def violations(self) -> dict[str, str]:
        """field → description of the error's google.rpc.BadRequest."""
        raw = self.details().get("google.rpc.BadRequest")
        if raw is None:
            return {}
        bad = error_details_pb2.BadRequest.FromString(raw)
        return {v.field: v.description for v in bad.field_violations}

    def reason(self) -> str:
        """The error's google.rpc.ErrorInfo reason ("" without one)."""
        raw = self.details().get("google.rpc.ErrorInfo")
        return error_details_pb2.ErrorInfo.FromString(raw).reason if raw else ""


@dataclass
class ConnectHttp:
    """Calls one service's HTTP port (`host:port`)."""

    address: str
    timeout: float = 20.0
    default_headers: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        path: str,
        body: bytes | Iterable[bytes],
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        host, port = self.address.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
        try:
            connection.request(method, path, body, {**self.default_headers, **(headers or {})})
            response = connection.getresponse()
            return Answer(
                response.status,
                {name.lower(): value for name, value in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def call(self, path: str, message: dict[str, Any], **headers: str) -> Answer:
        """A unary call with a JSON body."""
        return self.request(
            path,
            json.dumps(message).encode(),
            headers={"Content-Type": "application/json", **_header_names(headers)},
        )

    def ok(self, path: str, message: dict[str, Any], **headers: str) -> Any:
        """A unary call that must succeed; its JSON response."""
        answer = self.call(path, message, **headers)
        assert answer.status == 200, (path, answer.status, answer.body)
        return answer.json()

    def stream(
        self, path: str, message: dict[str, Any], timeout_ms: int | None = None
    ) -> tuple[list[Any], dict[str, Any]]:
        """A server stream: its JSON messages and its end-of-stream object (`error` when it
        failed)."""
        payload = json.dumps(message).encode()
        headers = {"Content-Type": "application/connect+json"}
        if timeout_ms is not None:
            headers["Connect-Timeout-Ms"] = str(timeout_ms)
        answer = self.request(path, struct.pack(">BI", 0, len(payload)) + payload, headers=headers)
        assert answer.status == 200, (path, answer.status, answer.body)
        messages: list[Any] = []
        end: dict[str, Any] = {}
        body = answer.body
        while body:
            flags, length = struct.unpack(">BI", body[:5])
            data, body = body[5 : 5 + length], body[5 + length :]
            if flags & END_STREAM:
                end = json.loads(data)
            else:
                messages.append(json.loads(data))
        return messages, end


def _header_names(headers: dict[str, str]) -> dict[str, str]:
    """Python keyword names (x_request_id) as HTTP header names (x-request-id)."""
    return {name.replace("_", "-"): value for name, value in headers.items()}
