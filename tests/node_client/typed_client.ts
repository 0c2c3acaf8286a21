// An outside client of the shop mesh written against the TypeScript that the repository's
// buf.gen.yaml generates (protoc-gen-es, the Connect-ES stack), over gRPC
// (@connectrpc/connect-node), then over the Connect protocol on the HTTP ports (HTTP/1.1,
// JSON and binary: the HTTP/JSON door of DESIGN §9, reached by the official Connect client). tests/contract/test_node_client.py generates the stubs into
// gen-ts/ next to this file, compiles it with tsc (a type error in a field name, an enum or
// a request shape fails the compilation) and runs it against a live mesh.
//
// Runs top-up -> order -> wait RESERVED -> pay -> get, checks a refusal, reads the order and
// the payment again and watches the order over Connect, and prints a JSON summary on stdout. Exits 1 on the first broken expectation.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";

import { MoneySchema } from "./gen-ts/shop/common/v1/money_pb.js";
import { CreditService } from "./gen-ts/shop/credit/v1/credit_service_pb.js";
import { ReservationState } from "./gen-ts/shop/credit/v1/credit_pb.js";
import { OrderStatus, type Order } from "./gen-ts/shop/order/v1/order_pb.js";
import { OrderService } from "./gen-ts/shop/order/v1/order_service_pb.js";
import { PaymentMethod, PaymentStatus } from "./gen-ts/shop/payment/v1/payment_pb.js";
import { PaymentService } from "./gen-ts/shop/payment/v1/payment_service_pb.js";

const TARGETS = {
  order: process.env.ORDER_TARGET ?? "localhost:50051",
  credit: process.env.CREDIT_TARGET ?? "localhost:50052",
  payment: process.env.PAYMENT_TARGET ?? "localhost:50053",
};
const HTTP = {
  order: process.env.ORDER_HTTP ?? "localhost:8051",
  payment: process.env.PAYMENT_HTTP ?? "localhost:8053",
};
const DEADLINE_MS = 20_000;
const WAIT_MS = 60_000;

function transport(target: string) {
  return createGrpcTransport({ baseUrl: `http://${target}`, defaultTimeoutMs: DEADLINE_MS });
}

function connectTransport(target: string, binary: boolean) {
  return createConnectTransport({
    baseUrl: `http://${target}`,
    httpVersion: "1.1",
    useBinaryFormat: binary,
    defaultTimeoutMs: DEADLINE_MS,
  });
}

async function until<T>(probe: () => Promise<T>, done: (value: T) => boolean, what: string) {
  const stop = Date.now() + WAIT_MS;
  for (;;) {
    const value = await probe();
    if (done(value)) return value;
    if (Date.now() > stop) throw new Error(`${what} not reached`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function main(): Promise<void> {
  const orders = createClient(OrderService, transport(TARGETS.order));
  const credits = createClient(CreditService, transport(TARGETS.credit));
  const payments = createClient(PaymentService, transport(TARGETS.payment));
  const customerId = randomUUID();
  const price = create(MoneySchema, { currencyCode: "USD", minorUnits: 4321n });

  const topped = await credits.topUpCredits({
    customerId,
    amount: { currencyCode: "USD", minorUnits: 10_000n },
    requestId: randomUUID(),
  });
  assert.equal(topped.account?.available?.minorUnits, 10_000n);

  const created = await orders.createOrder({
    customerId,
    items: [{ sku: "SKU-TS-1", quantity: 1, unitPrice: price }],
    requestId: randomUUID(),
  });
  assert.equal(created.order?.status, OrderStatus.PENDING);
  const orderId = created.order?.orderId ?? "";

  const reserved: Order = await until(
    async () => (await orders.getOrder({ orderId })).order as Order,
    (order) => order.status === OrderStatus.RESERVED,
    "order RESERVED",
  );
  const hold = (await credits.getReservation({ reservationId: reserved.reservationId }))
    .reservation;
  assert.equal(hold?.state, ReservationState.ACTIVE);

  const paid = await payments.processPayment({
    orderId,
    customerId,
    reservationId: reserved.reservationId,
    amount: reserved.total,
    paymentMethod: PaymentMethod.GOOGLE_PAY,
    requestId: randomUUID(),
  });
  assert.equal(paid.success, true, paid.errorMessage);
  assert.equal(paid.payment?.status, PaymentStatus.SUCCEEDED);

  const final: Order = await until(
    async () => (await orders.getOrder({ orderId })).order as Order,
    (order) => order.status === OrderStatus.PAID,
    "order PAID",
  );
  const read = (await payments.getPayment({ paymentId: paid.payment?.paymentId ?? "" })).payment;
  assert.equal(read?.amount?.minorUnits, 4321n);

  try {
    await orders.createOrder({ customerId: "not-a-uuid" });
    throw new Error("a bad request was accepted");
  } catch (error) {
    assert.ok(error instanceof ConnectError, String(error));
    assert.equal(error.code, Code.InvalidArgument);
  }

  // The same mesh over the Connect protocol: JSON to Order, binary protobuf to Payment.
  const ordersHttp = createClient(OrderService, connectTransport(HTTP.order, false));
  const paymentsHttp = createClient(PaymentService, connectTransport(HTTP.payment, true));
  const overHttp = (await ordersHttp.getOrder({ orderId })).order;
  assert.equal(overHttp?.status, OrderStatus.PAID);
  const paymentHttp = (await paymentsHttp.getPayment({ paymentId: read?.paymentId ?? "" }))
    .payment;
  assert.equal(paymentHttp?.amount?.minorUnits, 4321n);
  let watched = OrderStatus.UNSPECIFIED;
  for await (const change of ordersHttp.watchOrder({ orderId }, { timeoutMs: 5_000 })) {
    watched = change.order?.status ?? OrderStatus.UNSPECIFIED;
    break; // the order as it is now; PAID can still change (a refund), so the stream stays open
  }
  try {
    await ordersHttp.createOrder({ customerId: "not-a-uuid" });
    throw new Error("a bad request was accepted over Connect");
  } catch (error) {
    assert.ok(error instanceof ConnectError, String(error));
    assert.equal(error.code, Code.InvalidArgument);
  }

  process.stdout.write(
    `${JSON.stringify({
      order_id: orderId,
      connect_watched: OrderStatus[watched],
      order_status: OrderStatus[final.status],
      payment_status: PaymentStatus[read?.status ?? PaymentStatus.UNSPECIFIED],
      payment_method: PaymentMethod[read?.paymentMethod ?? PaymentMethod.UNSPECIFIED],
    })}\n`,
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`typed client failed: ${error instanceof Error ? error.stack : error}\n`);
  process.exit(1);
});
