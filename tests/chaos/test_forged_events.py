"""Scenario 9b: forged events against the permissioned NATS (refused).

An event is an instruction (`payments.refunded` gives credits back, `payments.succeeded`
captures a hold), so with the open NATS of `make run` anyone who reaches it moves money.
This scenario runs the mesh on NATS configured as the manifests configure it
(deploy/k8s/base/nats-auth.conf: a user per service, each publishing only its own events)
and forges from a compromised Order (its real user and password) and from a stranger (no
credentials): a refund of a paid payment and a success of an unpaid order. Every forgery is
refused, no balance or status moves, the books stay balanced, and a real saga completes
afterwards. Its own world (not the session cluster, whose NATS the invariants read openly).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import nats
import pytest
from nats.errors import Error as NatsError

from services.common.events import envelope, new_event
from services.localmesh.embedded import EmbeddedPostgres
from services.localmesh.mesh import LocalMesh
from shop.common.v1.money_pb2 import Money
from shop.credit.v1 import credit_pb2
from shop.order.v1 import order_pb2
from shop.payment.v1 import events_pb2 as payment_events
from shop.payment.v1 import payment_pb2
from tests.chaos.cluster import NAMES, Cluster, _create_database
from tests.ids import new_id
from tests.security.nats_auth import service_passwords, start_deployed_nats

pytestmark = pytest.mark.chaos


@dataclass
class PermissionedCluster(Cluster):
    """The chaos cluster on the manifests' NATS configuration, each service its own user."""

    passwords: dict[str, str] = field(default_factory=service_passwords)

    def start(self) -> None:
        self.nats = start_deployed_nats(self.root / "nats", self.passwords)
        self.postgres = EmbeddedPostgres(self.root / "postgres", preferred_port=0)
        self.postgres.start()
        self.database_url = asyncio.run(_create_database(self.postgres.url, "forged"))
        self.mesh = LocalMesh(
            data_dir=self.root / "mesh",
            database_url=self.database_url,
            nats_url=self.nats.url,
            ports={name: 0 for name in NAMES},
            extra_env={"OUTBOX_POLL_SECONDS": "0.5"},
            service_env_overrides={
                name: {"NATS_USER": name, "NATS_PASSWORD": self.passwords[name]} for name in NAMES
            },
        )
        self.mesh.start()


@pytest.fixture(scope="module")
def permissioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PermissionedCluster]:
    world = PermissionedCluster(tmp_path_factory.mktemp("chaos-forged"))
    world.start()
    yield world
    world.stop()


async def forge(
    url: str,
    event: payment_events.PaymentRefunded | payment_events.PaymentSucceeded,
    **credentials: str,
) -> str:
    """Publish `event` as a hostile producer; what happened ("acked" would be the breach)."""
    env = envelope(event, "/shop/payment")  # claims to be Payment
    try:
        nc = await nats.connect(url, connect_timeout=3, allow_reconnect=False, **credentials)
    except (NatsError, OSError) as error:
        return f"connection refused ({type(error).__name__})"
    try:
        await nc.jetstream(timeout=2).publish(env.subject, env.payload, headers=env.headers)
    except (TimeoutError, NatsError) as error:
        return f"no ack ({type(error).__name__})"
    finally:
        await nc.close()
    return "acked"


async def test_forged_payment_events_are_refused(permissioned: PermissionedCluster) -> None:
    async with permissioned.shop() as shop:
        customer = shop.new_customer()
        await shop.top_up(customer, 20000)
        paid_order = await shop.reserved_order(customer, 5000)
        paid = await shop.pay(paid_order)
        assert paid.payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED
        await shop.order_in(paid_order.order_id, order_pb2.ORDER_STATUS_PAID)
        unpaid_order = await shop.reserved_order(customer, 7000)
        before = await shop.account(customer)

        usd = {"currency_code": "USD"}
        refund = new_event(
            payment_events.PaymentRefunded,
            refund_id=new_id(),
            payment_id=paid.payment.payment_id,
            order_id=paid_order.order_id,
            customer_id=customer,
            amount=Money(minor_units=5000, **usd),
            refunded_total=Money(minor_units=5000, **usd),
            fully_refunded=True,
            reason="forged",
        )
        success = new_event(
            payment_events.PaymentSucceeded,
            payment_id=new_id(),
            order_id=unpaid_order.order_id,
            customer_id=customer,
            reservation_id=unpaid_order.reservation_id,
            amount=Money(minor_units=7000, **usd),
        )
        order_user = {"user": "order", "password": permissioned.passwords["order"]}
        outcomes = {
            "order forges a refund": await forge(permissioned.nats.url, refund, **order_user),
            "order forges a success": await forge(permissioned.nats.url, success, **order_user),
            "stranger forges a refund": await forge(permissioned.nats.url, refund),
        }
        assert all(outcome != "acked" for outcome in outcomes.values()), outcomes

        await asyncio.sleep(3)  # ample time for a consumer to apply what it never got
        assert await shop.account(customer) == before
        assert (await shop.get_order(paid_order.order_id)).status == order_pb2.ORDER_STATUS_PAID
        assert (
            await shop.get_order(unpaid_order.order_id)
        ).status == order_pb2.ORDER_STATUS_RESERVED
        held = await shop.reservation(unpaid_order.reservation_id)
        assert held.state == credit_pb2.RESERVATION_STATE_ACTIVE

        # The mesh carries on: the real payment of the second order goes through.
        second = await shop.pay(unpaid_order)
        assert second.payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED
        await shop.order_in(unpaid_order.order_id, order_pb2.ORDER_STATUS_PAID)
        await shop.check_books()
