"""The contract as data: a FileDescriptorSet compiled from proto/ (not the generated code),
turned into the lists the contract suite and `make docs` iterate over.

Everything is derived from the .proto files: a new RPC, request field rule or event message is
picked up by the next run without touching a test.

- methods: every `rpc` of every `service` in proto/shop;
- field rules: the `buf.validate` annotations on request fields (`required`, `string.uuid`)
  and the message-level `oneof` rules that require one of several fields;
- events: every message carrying the `(shop.common.v1.event_subject)` option; by convention
  every top-level message of an `events.proto` file is an event and must carry it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, cast

# Imported for their side effect: the options become readable on parsed descriptors.
from buf.validate import validate_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

import services
from services.common.inbox import Consumer
from shop.common.v1 import event_options_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
OWN_PACKAGE_PREFIX = "shop."
EVENTS_FILE = "events.proto"


def build_descriptor_set(out: Path) -> Path:
    """Compile proto/ with buf (from the venv) or, without it, the protoc of grpcio-tools;
    imports and source comments included."""
    buf = Path(sys.executable).parent / "buf"
    if not buf.exists() and shutil.which("buf"):
        buf = Path(str(shutil.which("buf")))
    if buf.exists():
        command = [str(buf), "build", "--as-file-descriptor-set", "-o", str(out)]
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
        return out
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_DIR}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        *protos,
    ]
    subprocess.run(command, cwd=PROTO_DIR, check=True, capture_output=True, text=True)
    return out


@dataclass(frozen=True, slots=True)
class FieldRule:
    message: str  # full name of the request message
    field: str
    required: bool  # (buf.validate.field).required
    uuid: bool  # (buf.validate.field).string.uuid
    one_of_required: str  # the fields of a required (buf.validate.message).oneof, joined by ","


@dataclass(frozen=True, slots=True)
class BoundCase:
    """A value just outside one bound a `buf.validate` rule declares (a range, a length, an
    item count, a defined enum), at `path` of a request message (`items[0].quantity`)."""

    message: str  # full name of the request message
    path: str
    rule: str  # e.g. "int32.gte = 0"
    value: object  # int or str; for repeated.max_items, the number of items

    def build(self, request: Message) -> None:
        """Set the value in `request` (a message built from the descriptors)."""
        target, name = request, self.path
        if "[0]." in self.path:  # one element of a repeated message field
            repeated, name = self.path.split("[0].")
            target = getattr(request, repeated).add()
        if self.rule.startswith("repeated.max_items"):
            items = getattr(target, name)
            assert isinstance(self.value, int)
            for _ in range(self.value):
                items.add()
            return
        setattr(target, name, self.value)


@dataclass(frozen=True, slots=True)
class Method:
    service: str  # e.g. shop.order.v1.OrderService
    name: str  # e.g. CreateOrder
    input_type: str
    output_type: str
    comment: str
    server_streaming: bool = False

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def id(self) -> str:
        return f"{self.service.rsplit('.', 1)[-1]}/{self.name}"


@dataclass(frozen=True, slots=True)
class Event:
    full_name: str  # e.g. shop.order.v1.OrderCreated
    subject: str  # "" when the option is missing (a contract error)
    file: str
    comment: str

    @property
    def id(self) -> str:
        return f"{self.full_name} -> {self.subject or '(no subject)'}"


def _comment(file: descriptor_pb2.FileDescriptorProto, path: tuple[int, ...]) -> str:
    for location in file.source_code_info.location:
        if tuple(location.path) == path:
            return " ".join(location.leading_comments.split())
    return ""


# Field numbers inside FileDescriptorProto / DescriptorProto, for source-code-info paths.
_FILE_MESSAGE = 4
_FILE_SERVICE = 6
_SERVICE_METHOD = 2


class Contract:
    """The parsed descriptor set, with a pool that builds message classes from it."""

    def __init__(self, descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
        self.descriptor_set = descriptor_set
        self.pool = descriptor_pool.DescriptorPool()
        for file in descriptor_set.file:  # dependencies come first in a descriptor set
            self.pool.Add(file)
        self.files = [f for f in descriptor_set.file if f.package.startswith(OWN_PACKAGE_PREFIX)]

    @classmethod
    def load(cls, path: Path | None = None) -> Contract:
        if path is None:
            with tempfile.TemporaryDirectory() as tmp:
                data = build_descriptor_set(Path(tmp) / "shop.binpb").read_bytes()
        else:
            data = path.read_bytes()
        return cls(descriptor_pb2.FileDescriptorSet.FromString(data))

    @cached_property
    def services(self) -> list[str]:
        return [f"{f.package}.{s.name}" for f in self.files for s in f.service]

    @cached_property
    def methods(self) -> list[Method]:
        found = []
        for file in self.files:
            for s_index, service in enumerate(file.service):
                for m_index, method in enumerate(service.method):
                    path = (_FILE_SERVICE, s_index, _SERVICE_METHOD, m_index)
                    found.append(
                        Method(
                            service=f"{file.package}.{service.name}",
                            name=method.name,
                            input_type=method.input_type.lstrip("."),
                            output_type=method.output_type.lstrip("."),
                            comment=_comment(file, path),
                            server_streaming=method.server_streaming,
                        )
                    )
        return found

    @cached_property
    def events(self) -> list[Event]:
        """Messages with a subject, plus every top-level message of an events.proto file
        (with subject "" when it lacks the option, so the suite can name it)."""
        found = []
        for file in self.files:
            for index, message in enumerate(file.message_type):
                subject = message.options.Extensions[event_options_pb2.event_subject]
                if subject or Path(file.name).name == EVENTS_FILE:
                    found.append(
                        Event(
                            full_name=f"{file.package}.{message.name}",
                            subject=subject,
                            file=file.name,
                            comment=_comment(file, (_FILE_MESSAGE, index)),
                        )
                    )
        return found

    def field_rules(self, message_name: str) -> list[FieldRule]:
        """The request fields' `buf.validate` rules the contract suite checks on every server."""
        message = self.pool.FindMessageTypeByName(message_name)
        proto = descriptor_pb2.DescriptorProto()
        message.CopyToProto(proto)
        groups: dict[str, str] = {}
        for oneof in proto.options.Extensions[validate_pb2.message].oneof:
            if oneof.required:
                groups |= dict.fromkeys(oneof.fields, ",".join(oneof.fields))
        rules = []
        for field in proto.field:
            rule = field.options.Extensions[validate_pb2.field]
            uuid = rule.HasField("string") and rule.string.uuid
            one_of = groups.get(field.name, "")
            if rule.required or uuid or one_of:
                rules.append(FieldRule(message_name, field.name, rule.required, uuid, one_of))
        return rules

    def bound_cases(self, message_name: str) -> list[BoundCase]:
        """One value just past each declared bound of the request's fields and of the fields
        of its repeated message fields' elements. CEL rules are not derived (their bounds are
        expressions)."""
        message = self.pool.FindMessageTypeByName(message_name)
        cases = []
        for field in message.fields:
            cases += _bounds(message_name, field, field.name)
            if field.message_type is not None and _is_repeated(field):
                for inner in field.message_type.fields:
                    cases += _bounds(message_name, inner, f"{field.name}[0].{inner.name}")
        return cases

    def id_fields_without_uuid_rule(self) -> list[str]:
        """`Message.field` of every string `*_id` field of a request message that lacks the
        `string.uuid` rule (page tokens and free text are not ids)."""
        missing = []
        for method in self.methods:
            with_rule = {r.field for r in self.field_rules(method.input_type) if r.uuid}
            message = self.pool.FindMessageTypeByName(method.input_type)
            for field in message.fields:
                is_string = field.type == field.TYPE_STRING
                if is_string and field.name.endswith("_id") and field.name not in with_rule:
                    missing.append(f"{method.input_type}.{field.name}")
        return missing

    def message_class(self, full_name: str) -> type[Message]:
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))

    def message_names(self, full_name: str) -> set[str]:
        """The message and every message type it reaches through its fields."""
        seen: set[str] = set()
        pending = [self.pool.FindMessageTypeByName(full_name)]
        while pending:
            message = pending.pop()
            if message.full_name in seen:
                continue
            seen.add(message.full_name)
            pending += [f.message_type for f in message.fields if f.message_type is not None]
        return seen


def service_consumers() -> list[tuple[str, Consumer]]:
    """The durable consumers each service defines (services/<name>/entrypoints/events.py),
    built with placeholders: only their names and handlers are read."""
    found: list[tuple[str, Consumer]] = []
    for module in pkgutil.iter_modules(services.__path__):
        try:
            events = importlib.import_module(f"services.{module.name}.entrypoints.events")
        except ModuleNotFoundError:
            continue
        factory = getattr(events, "consumers", None)
        if factory is None:
            continue
        placeholders: dict[str, Any] = {
            name: 1 if parameter.annotation in ("int", "float") else cast(Any, None)
            for name, parameter in inspect.signature(factory).parameters.items()
        }
        found += [(module.name, consumer) for consumer in factory(**placeholders)]
    return found


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _bounds(message: str, field: FieldDescriptor, path: str) -> list[BoundCase]:
    owner = descriptor_pb2.DescriptorProto()
    assert field.containing_type is not None
    field.containing_type.CopyToProto(owner)
    (proto,) = [f for f in owner.field if f.name == field.name]
    rule = proto.options.Extensions[validate_pb2.field]
    cases = []
    if rule.HasField("int32"):
        ints = rule.int32
        if ints.HasField("gt"):
            cases.append(BoundCase(message, path, f"int32.gt = {ints.gt}", ints.gt))
        if ints.HasField("gte"):
            cases.append(BoundCase(message, path, f"int32.gte = {ints.gte}", ints.gte - 1))
        if ints.HasField("lt"):
            cases.append(BoundCase(message, path, f"int32.lt = {ints.lt}", ints.lt))
        if ints.HasField("lte"):
            cases.append(BoundCase(message, path, f"int32.lte = {ints.lte}", ints.lte + 1))
    if rule.HasField("string") and rule.string.HasField("max_len"):
        too_long = "x" * (rule.string.max_len + 1)
        cases.append(BoundCase(message, path, f"string.max_len = {rule.string.max_len}", too_long))
    if rule.HasField("repeated") and rule.repeated.HasField("max_items"):
        most = rule.repeated.max_items
        cases.append(BoundCase(message, path, f"repeated.max_items = {most}", most + 1))
    if rule.HasField("enum") and rule.enum.defined_only:
        assert field.enum_type is not None
        undefined = max(v.number for v in field.enum_type.values) + 1000
        cases.append(BoundCase(message, path, "enum.defined_only", undefined))
    return cases
