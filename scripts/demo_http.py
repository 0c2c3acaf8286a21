"""`make demo-http`: the seed story against a running `make run` mesh over HTTP and JSON only
(the Connect protocol, DESIGN §9), printing before each call the `curl` command that does
the same, then what came back.

    no credits → order REJECTED; top up → order RESERVED (a hold on the balance);
    pay → PAID (hold captured); refund → REFUNDED (credits back); a bad request → 400.

It waits for each step by watching the order (WatchOrder, a Connect server stream), like a
browser would; nothing here but the standard library.

Addresses: ORDER_HTTP, CREDIT_HTTP, PAYMENT_HTTP (host:port), else where `make run` listens.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import struct
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_DIR = Path(os.environ.get("MESH_DATA_DIR", ".data"))
DEFAULT_HTTP = {"order": "127.0.0.1:8051", "credit": "127.0.0.1:8052", "payment": "127.0.0.1:8053"}
SERVICES = {
    "order": "shop.order.v1.OrderService",
    "credit": "shop.credit.v1.CreditService",
    "payment": "shop.payment.v1.PaymentService",
}
END_STREAM = 0x02


class DemoError(RuntimeError):
    pass


def addresses() -> dict[str, str]:
    found = dict(DEFAULT_HTTP)
    written = DATA_DIR / "http_ports.json"
    if written.exists():  # make run writes the HTTP ports it actually took
        found.update({k: f"127.0.0.1:{v}" for k, v in json.loads(written.read_text()).items()})
    for name in found:
        found[name] = os.environ.get(f"{name.upper()}_HTTP", found[name])
    return found


@dataclass
class Answer:
    status: int
    body: Any
    request_id: str


def post(address: str, path: str, body: bytes, content_type: str, timeout: float) -> Answer:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("POST", path, body, {"Content-Type": content_type})
        response = connection.getresponse()
        raw = response.read()
        request_id = response.getheader("x-request-id") or ""
    except OSError as error:
        raise DemoError(f"cannot reach {address}: {error}") from error
    finally:
        connection.close()
    if content_type.startswith("application/connect+"):
        return Answer(response.status, raw, request_id)
    return Answer(response.status, json.loads(raw or b"{}"), request_id)


def money(value: dict[str, Any] | None) -> str:
    value = value or {}
    units = int(value.get("minor_units", 0))
    return f"{value.get('currency_code', 'USD')} {units // 100}.{units % 100:02d}"


def usd(minor_units: int) -> dict[str, Any]:
    return {"currency_code": "USD", "minor_units": minor_units}


def step(title: str) -> None:
    print(f"\n==> {title}")


class Demo:
    def __init__(self, where: dict[str, str]) -> None:
        self.where = where
        self.customer = str(uuid.uuid4())

    def call(self, service: str, method: str, data: dict[str, Any], *, show: bool = True) -> Any:
        """One unary call; prints its curl first, and refuses anything but 200."""
        answer = self.send(service, method, data, show=show)
        if answer.status != 200:
            raise DemoError(f"{method} answered HTTP {answer.status}: {json.dumps(answer.body)}")
        return answer.body

    def send(self, service: str, method: str, data: dict[str, Any], *, show: bool = True) -> Answer:
        url = f"http://{self.where[service]}/{SERVICES[service]}/{method}"
        body = json.dumps(data)
        if show:
            print(
                f"  $ curl -sS -H 'Content-Type: application/json' -d {shlex.quote(body)} \\\n"
                f"      {url}"
            )
        path = f"/{SERVICES[service]}/{method}"
        return post(self.where[service], path, body.encode(), "application/json", 30)

    def create_order(self, minor_units: int) -> dict[str, Any]:
        order: dict[str, Any] = self.call(
            "order",
            "CreateOrder",
            {
                "customer_id": self.customer,
                "items": [{"sku": "BOOK-42", "quantity": 2, "unit_price": usd(minor_units // 2)}],
                "request_id": str(uuid.uuid4()),
            },
        )["order"]
        print(f"  order {order['order_id']} total {money(order['total'])}: {order['status']}")
        return order

    def wait_order(self, order_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
        """Watch the order (WatchOrder as a Connect stream) until it is in `status`."""
        get_order = json.dumps({"order_id": order_id})
        print(
            f"  (watching it: WatchOrder, a Connect stream; or read it with curl:\n"
            f"   curl -sS -H 'Content-Type: application/json' -d '{get_order}' \\\n"
            f"      http://{self.where['order']}/{SERVICES['order']}/GetOrder)"
        )
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            for order in self.watch(order_id, deadline - time.monotonic()):
                if not seen or seen[-1] != order["status"]:
                    seen.append(order["status"])
                    reason = f" ({order['failure_reason']})" if order.get("failure_reason") else ""
                    print(f"  stream: {order['status']}{reason}")
                if order["status"] == f"ORDER_STATUS_{status}":
                    return order
        raise DemoError(f"order {order_id} went {' → '.join(seen) or 'nowhere'}, not {status}")

    def watch(self, order_id: str, seconds: float) -> list[dict[str, Any]]:
        """The orders one WatchOrder stream sent before it ended (at most `seconds` long)."""
        payload = json.dumps({"order_id": order_id}).encode()
        path = f"/{SERVICES['order']}/WatchOrder"
        host, port = self.where["order"].rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=seconds + 5)
        headers = {
            "Content-Type": "application/connect+json",
            "Connect-Timeout-Ms": str(max(int(seconds * 1000), 1)),
        }
        orders: list[dict[str, Any]] = []
        try:
            connection.request("POST", path, struct.pack(">BI", 0, len(payload)) + payload, headers)
            response = connection.getresponse()
            while envelope := response.read(5):
                flags, length = struct.unpack(">BI", envelope)
                message = json.loads(response.read(length))
                if flags & END_STREAM:
                    error = message.get("error")
                    if error and error.get("code") != "deadline_exceeded":
                        raise DemoError(f"WatchOrder ended with {error}")
                    break
                orders.append(message["order"])
                if message["order"]["status"].endswith(("PAID", "RESERVED", "REJECTED")):
                    break  # what the demo waits for; the stream would go on
        except OSError as error:
            raise DemoError(f"cannot reach {self.where['order']}: {error}") from error
        finally:
            connection.close()
        return orders

    def balance(self, *, spent: int | None = None, timeout: float = 20.0) -> None:
        """Show the balance; with `spent`, first wait for it (Credit applies events async)."""
        deadline = time.monotonic() + timeout
        show = True
        while True:
            account = self.call(
                "credit", "GetCreditAccount", {"customer_id": self.customer}, show=show
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
        self.call(
            "credit",
            "TopUpCredits",
            {"customer_id": self.customer, "amount": usd(20000), "request_id": str(uuid.uuid4())},
        )
        self.balance()

        step("3. A new order puts a hold on the credits")
        order = self.wait_order(self.create_order(15000)["order_id"], "RESERVED")
        self.balance()

        step("4. Payment: Payment checks the order and the hold, then charges once")
        paid = self.call(
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
        print(f"  success={paid.get('success', False)} {payment['status']}")
        self.wait_order(order["order_id"], "PAID")
        self.balance(spent=15000)

        step("5. A full refund gives the credits back")
        refunded = self.call(
            "payment",
            "RefundPayment",
            {
                "payment_id": payment["payment_id"],
                "reason": "customer returned the books",
                "request_id": str(uuid.uuid4()),
            },
        )
        print(f"  refund {money(refunded['refund']['amount'])}: {refunded['payment']['status']}")
        self.balance(spent=0)

        step("6. A bad request is refused with HTTP 400, naming each bad field")
        bad = self.send("credit", "TopUpCredits", {"customer_id": "nope", "amount": usd(-5)})
        print(f"  HTTP {bad.status}, x-request-id {bad.request_id}")
        print("  " + json.dumps(bad.body, indent=2).replace("\n", "\n  "))
        if bad.status != 400:
            raise DemoError(f"the bad request answered HTTP {bad.status}, not 400")
        print("\nThe seed story ran end to end over HTTP and JSON.")


def main() -> int:
    where = addresses()
    print(
        "Running the seed story over HTTP/JSON against "
        + ", ".join(f"{k} {v}" for k, v in where.items())
    )
    try:
        Demo(where).run()
    except DemoError as error:
        print(f"\nerror: {error}\n(is the mesh running? start it with `make run`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
