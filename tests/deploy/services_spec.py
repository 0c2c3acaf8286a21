"""What the manifests are checked against, taken from the code rather than restated:
the settings each service reads, its default port and its full gRPC service name."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from services.common.settings import SettingsError
from services.credit.config import CreditSettings
from services.order.config import OrderSettings
from services.payment.config import PaymentSettings
from shop.credit.v1 import credit_service_pb2
from shop.order.v1 import order_service_pb2
from shop.payment.v1 import payment_service_pb2


class RecordingEnviron(Mapping[str, str]):
    """An environment that remembers every name the settings code looks up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    grpc_service: str
    from_env: Callable[[Mapping[str, str]], Any]

    def reads(self, environ: Mapping[str, str]) -> tuple[set[str], list[str]]:
        """(names read, problems) when the service's settings are read from `environ`."""
        recorder = RecordingEnviron(environ)
        try:
            self.from_env(recorder)
        except SettingsError as error:
            return recorder.read, error.problems
        return recorder.read, []

    def required(self) -> set[str]:
        """Names without a default: reading an empty environment reports them missing."""
        read, problems = self.reads({})
        return {name for name in read if any(p.startswith(f"{name} ") for p in problems)}

    def settings(self, environ: Mapping[str, str]) -> Any:
        return self.from_env(environ)


SERVICES: dict[str, ServiceSpec] = {
    "order": ServiceSpec(
        "order",
        order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
        OrderSettings.from_env,
    ),
    "credit": ServiceSpec(
        "credit",
        credit_service_pb2.DESCRIPTOR.services_by_name["CreditService"].full_name,
        CreditSettings.from_env,
    ),
    "payment": ServiceSpec(
        "payment",
        payment_service_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,
        PaymentSettings.from_env,
    ),
}
