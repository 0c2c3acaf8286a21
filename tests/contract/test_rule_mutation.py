"""The contract suite catches a `buf.validate` rule that goes missing, naming the field.

Two mutations of one request field's rules, each on a copy of the descriptors compiled from
proto/:
- the server's copy loses the field's rules (a server built from an older or edited proto):
  the suite's own check, run against that server, fails naming the field;
- the contract's copy loses them (someone deletes the annotation from proto/): the check that
  every id field declares its UUID rule fails naming the field.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest.mock import patch

import grpc
import protovalidate
import pytest
from buf.validate import validate_pb2
from google.protobuf import descriptor_pb2

from services.common import request_rules
from services.common.grpc_server import create_server
from tests.contract.conftest import CONTRACT
from tests.contract.descriptors import Contract
from tests.contract.test_rpcs import UUID_FIELDS, check_uuid_field

pytestmark = pytest.mark.integration

METHOD, RULE = next((m, r) for m, r in UUID_FIELDS if m.name == "GetPayment")


def without_rules(contract: Contract, message: str, field: str) -> Contract:
    """A copy of the contract whose `message.field` carries no buf.validate rule."""
    mutated = descriptor_pb2.FileDescriptorSet()
    mutated.CopyFrom(contract.descriptor_set)
    package, name = message.rsplit(".", 1)
    for file in mutated.file:
        if file.package != package:
            continue
        for candidate in file.message_type:
            if candidate.name != name:
                continue
            for declared in candidate.field:
                if declared.name == field:
                    assert declared.options.HasExtension(validate_pb2.field)
                    declared.options.ClearExtension(validate_pb2.field)
                    return Contract(mutated)
    raise AssertionError(f"no field {message}.{field} in the contract")


@contextmanager
def serving(contract: Contract) -> Iterator[grpc.Channel]:
    """The real server stack (create_server: its interceptors, protovalidate) serving
    METHOD with the request type of `contract`; the handler answers an empty response. The
    validator caches rules by message name, so each server gets a fresh one."""
    request_class = contract.message_class(METHOD.input_type)

    async def handler(request: Any, context: Any) -> bytes:
        return b""

    generic = grpc.method_handlers_generic_handler(
        METHOD.service,
        {
            METHOD.name: grpc.unary_unary_rpc_method_handler(
                handler,
                request_deserializer=request_class.FromString,
                response_serializer=lambda response: response,
            )
        },
    )
    fresh = patch.object(request_rules, "_VALIDATOR", protovalidate.Validator())
    fresh.start()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        create_server(
            "127.0.0.1:0", [lambda s: s.add_generic_rpc_handlers((generic,))], [METHOD.service]
        ),
        loop,
    ).result(timeout=30)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield channel
    finally:
        channel.close()
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        fresh.stop()


def test_a_server_missing_a_fields_rule_fails_the_suite_naming_the_field() -> None:
    with serving(CONTRACT) as intact:
        check_uuid_field(intact, METHOD, RULE)  # the control: the rule holds, the check passes
    with (
        serving(without_rules(CONTRACT, METHOD.input_type, RULE.field)) as mutated,
        pytest.raises(AssertionError) as failed,
    ):
        check_uuid_field(mutated, METHOD, RULE)
    assert f"{RULE.field}=" in str(failed.value)
    assert METHOD.path in str(failed.value)


def test_a_rule_deleted_from_the_contract_fails_the_suite_naming_the_field() -> None:
    assert CONTRACT.id_fields_without_uuid_rule() == []
    mutated = without_rules(CONTRACT, METHOD.input_type, RULE.field)
    assert mutated.id_fields_without_uuid_rule() == [f"{METHOD.input_type}.{RULE.field}"]
