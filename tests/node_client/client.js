// An outside client of the shop mesh in a second gRPC implementation (@grpc/grpc-js), loading
// the .proto files directly (@grpc/proto-loader): no generated code from this repository.
//
// Runs top-up -> order -> watch it (WatchOrder, a server stream) until RESERVED -> pay ->
// watch until PAID -> get against a live mesh, checks every answer, and prints a JSON
// summary on stdout. Exits 1 on the first broken expectation.
//
//   PROTO_DIR=proto ORDER_TARGET=localhost:50051 CREDIT_TARGET=localhost:50052 \
//     PAYMENT_TARGET=localhost:50053 node tests/node_client/client.js
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_DIR = path.resolve(process.env.PROTO_DIR || path.join(__dirname, "..", "..", "proto"));
const TARGETS = {
  order: process.env.ORDER_TARGET || "localhost:50051",
  credit: process.env.CREDIT_TARGET || "localhost:50052",
  payment: process.env.PAYMENT_TARGET || "localhost:50053",
};
const DEADLINE_MS = 20000;
const WAIT_MS = 60000;

function load() {
  const definition = protoLoader.loadSync(
    [
      "shop/order/v1/order_service.proto",
      "shop/credit/v1/credit_service.proto",
      "shop/payment/v1/payment_service.proto",
    ],
    { includeDirs: [PROTO_DIR], keepCase: true, longs: String, enums: String, defaults: true },
  );
  return grpc.loadPackageDefinition(definition).shop;
}

function promisify(client, method) {
  return (request) =>
    new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + DEADLINE_MS);
      client[method](request, { deadline }, (error, response) =>
        error ? reject(error) : resolve(response),
      );
    });
}

async function refusal(call, request) {
  try {
    await call(request);
  } catch (error) {
    return error;
  }
  throw new Error(`expected a refusal for ${JSON.stringify(request)}`);
}

async function until(probe, done, what) {
  const stop = Date.now() + WAIT_MS;
  for (;;) {
    const value = await probe();
    if (done(value)) return value;
    if (Date.now() > stop) throw new Error(`${what} not reached; last: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

// WatchOrder as promises: `until(status)` resolves with the first order in that status the
// stream has sent; `seen` is every order it sent.
function watch(client, orderId) {
  const call = client.WatchOrder(
    { order_id: orderId },
    { deadline: new Date(Date.now() + WAIT_MS) },
  );
  const seen = [];
  let waiting = [];
  let ended = null;
  const wake = () => {
    const woken = waiting;
    waiting = [];
    for (const resolve of woken) resolve();
  };
  call.on("data", (response) => {
    seen.push(response.order);
    wake();
  });
  call.on("error", (error) => {
    ended = error;
    wake();
  });
  call.on("end", () => {
    ended = ended || new Error("stream ended");
    wake();
  });
  return {
    seen,
    async until(status) {
      for (;;) {
        const found = seen.find((o) => o.status === status);
        if (found) return found;
        if (ended) throw new Error(`stream over before ${status}: ${ended.message || ended}`);
        await new Promise((resolve) => waiting.push(resolve));
      }
    },
    cancel: () => call.cancel(),
  };
}

function watchRefusal(client, orderId) {
  return new Promise((resolve, reject) => {
    const call = client.WatchOrder(
      { order_id: orderId },
      { deadline: new Date(Date.now() + DEADLINE_MS) },
    );
    call.on("data", (response) => reject(new Error(`answered ${JSON.stringify(response)}`)));
    call.on("error", resolve);
    call.on("end", () => reject(new Error("stream ended OK")));
  });
}

async function main() {
  const shop = load();
  const credentials = grpc.credentials.createInsecure();
  const order = new shop.order.v1.OrderService(TARGETS.order, credentials);
  const credit = new shop.credit.v1.CreditService(TARGETS.credit, credentials);
  const payment = new shop.payment.v1.PaymentService(TARGETS.payment, credentials);
  const api = {
    topUp: promisify(credit, "TopUpCredits"),
    account: promisify(credit, "GetCreditAccount"),
    reservation: promisify(credit, "GetReservation"),
    createOrder: promisify(order, "CreateOrder"),
    getOrder: promisify(order, "GetOrder"),
    pay: promisify(payment, "ProcessPayment"),
    getPayment: promisify(payment, "GetPayment"),
  };
  const customer = crypto.randomUUID();
  const price = { currency_code: "USD", minor_units: "4321" };

  const topped = await api.topUp({
    customer_id: customer,
    amount: { currency_code: "USD", minor_units: "10000" },
    request_id: crypto.randomUUID(),
  });
  assert.equal(topped.account.customer_id, customer);
  assert.equal(topped.account.available.minor_units, "10000");

  const created = await api.createOrder({
    customer_id: customer,
    items: [{ sku: "SKU-NODE-1", quantity: 1, unit_price: price }],
    request_id: crypto.randomUUID(),
  });
  assert.equal(created.order.status, "ORDER_STATUS_PENDING");
  assert.deepEqual(created.order.total, price);
  const orderId = created.order.order_id;

  // Watched, not polled: no GetOrder while the saga moves.
  const watched = watch(order, orderId);
  const reserved = await watched.until("ORDER_STATUS_RESERVED");
  const hold = (await api.reservation({ reservation_id: reserved.reservation_id })).reservation;
  assert.equal(hold.state, "RESERVATION_STATE_ACTIVE");
  assert.deepEqual(hold.amount, price);

  const paid = await api.pay({
    order_id: orderId,
    customer_id: customer,
    reservation_id: reserved.reservation_id,
    amount: price,
    payment_method: "PAYMENT_METHOD_APPLE_PAY",
    request_id: crypto.randomUUID(),
  });
  assert.equal(paid.success, true, paid.error_message);
  assert.equal(paid.payment.status, "PAYMENT_STATUS_SUCCEEDED");
  assert.equal(paid.payment.payment_method, "PAYMENT_METHOD_APPLE_PAY");
  assert.match(paid.payment.transaction_id, /^txn_[0-9a-f]{16}$/);

  const final = await watched.until("ORDER_STATUS_PAID");
  watched.cancel(); // PAID may still be refunded: the stream stays open until cancelled
  assert.deepEqual(final, (await api.getOrder({ order_id: orderId })).order);
  assert.equal(final.payment_id, paid.payment.payment_id);
  const read = (await api.getPayment({ payment_id: paid.payment.payment_id })).payment;
  assert.deepEqual(read.amount, price);
  const account = await until(
    async () => (await api.account({ customer_id: customer })).account,
    (a) => a.spent.minor_units === price.minor_units,
    "credits captured",
  );
  assert.equal(account.available.minor_units, String(10000 - 4321));
  assert.equal(account.reserved.minor_units, "0");

  const bad = await refusal(api.createOrder, {});
  assert.equal(bad.code, grpc.status.INVALID_ARGUMENT);
  assert.ok(bad.metadata.get("grpc-status-details-bin").length, "rich error details");
  const unknown = await refusal(api.getOrder, { order_id: crypto.randomUUID() });
  assert.equal(unknown.code, grpc.status.NOT_FOUND);
  const unwatched = await watchRefusal(order, crypto.randomUUID());
  assert.equal(unwatched.code, grpc.status.NOT_FOUND);

  for (const client of [order, credit, payment]) client.close();
  const summary = {
    customer_id: customer,
    order_id: orderId,
    order_status: final.status,
    watched: watched.seen.map((o) => o.status),
    payment_id: read.payment_id,
    payment_status: read.status,
    available: account.available.minor_units,
    spent: account.spent.minor_units,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

main().catch((error) => {
  process.stderr.write(`node client failed: ${error.stack || error}\n`);
  process.exit(1);
});
