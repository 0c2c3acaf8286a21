"""The tree says what it promises: domain code knows no transport (gRPC, protobuf, the
generated contract code), so the same rules serve any door (gRPC and Connect); use cases
reach storage only through their ports, so they run against fakes without servers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN_MODULES = sorted(
    [
        *ROOT.glob("services/*/domain/*.py"),
        ROOT / "services/common/errors.py",
        ROOT / "services/common/money.py",
    ]
)
SERVICE_LAYER_MODULES = sorted(ROOT.glob("services/*/service_layer/*.py"))
# What a use case may not import: the database drivers, and its service's adapters other
# than the proto mapping (the contract's events it emits are built there).
STORAGE = ("sqlalchemy", "asyncpg")
TRANSPORT = ("grpc", "grpc_status", "grpc_health", "google.protobuf", "google.rpc", "shop")


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_there_is_domain_code_to_check() -> None:
    assert len(DOMAIN_MODULES) >= 6, DOMAIN_MODULES


@pytest.mark.parametrize("path", DOMAIN_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_domain_modules_import_no_transport(path: Path) -> None:
    transport = {
        name
        for name in imported_modules(path)
        if any(name == t or name.startswith(f"{t}.") for t in TRANSPORT)
    }
    assert not transport, f"{path.relative_to(ROOT)} imports {sorted(transport)}"


def _storage_imports(path: Path) -> set[str]:
    service = path.parts[-3]
    allowed_adapter = f"services.{service}.adapters.proto_mapping"
    return {
        name
        for name in imported_modules(path)
        if any(name == s or name.startswith(f"{s}.") for s in STORAGE)
        or (".adapters" in name and name != allowed_adapter)
    }


def test_there_are_use_cases_to_check() -> None:
    services = {p.parts[-3] for p in SERVICE_LAYER_MODULES}
    assert services == {"credit", "order", "payment"}, SERVICE_LAYER_MODULES


@pytest.mark.parametrize("path", SERVICE_LAYER_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_use_cases_reach_storage_only_through_their_ports(path: Path) -> None:
    leaks = _storage_imports(path)
    assert not leaks, f"{path.relative_to(ROOT)} imports {sorted(leaks)}"


def test_the_check_sees_a_storage_import(tmp_path: Path) -> None:
    leaky = tmp_path / "services" / "order" / "service_layer" / "leaky.py"
    leaky.parent.mkdir(parents=True)
    leaky.write_text(
        "import asyncpg\n"
        "from services.order.adapters.repository import OrderRepository\n"
        "from services.order.adapters.proto_mapping import order_created\n"
        "from services.credit.adapters.proto_mapping import credits_reserved\n"
    )
    assert _storage_imports(leaky) == {
        "asyncpg",
        "services.order.adapters.repository",
        "services.credit.adapters.proto_mapping",
    }


def test_the_check_sees_a_transport_import(tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.py"
    leaky.write_text("import grpc\nfrom shop.order.v1 import order_pb2\nfrom . import sibling\n")
    assert imported_modules(leaky) == {"grpc", "shop.order.v1"}


def test_the_transport_maps_each_kind_of_domain_error_to_its_status() -> None:
    import grpc

    from services.common import errors
    from services.common.grpc_server import grpc_code, to_rpc_status

    expected = [
        (errors.InvalidArgument("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("gone"), grpc.StatusCode.NOT_FOUND),
        (errors.IdempotencyKeyReused(""), grpc.StatusCode.ALREADY_EXISTS),  # a subclass
        (errors.PermissionDenied("no"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.FailedPrecondition("not now"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.ResourceExhausted("full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unavailable("down"), grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded("late"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.DomainError("?"), grpc.StatusCode.UNKNOWN),
    ]
    assert [(error, grpc_code(error)) for error, _ in expected] == expected
    assert to_rpc_status(errors.NotFound("gone")).code == grpc.StatusCode.NOT_FOUND.value[0]
