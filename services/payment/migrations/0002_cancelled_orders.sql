-- Orders Order announced as cancelled (orders.cancelled). A payment that succeeds at the
-- gateway after its order was cancelled is refunded automatically: the consumer notes the
-- order here, and the compensation job refunds the order's successful payment once Order
-- confirms the cancellation. resolved_at is set when there is nothing (more) to do.
CREATE TABLE cancelled_orders (
    order_id    uuid        PRIMARY KEY,
    reason      text        NOT NULL DEFAULT '',
    noted_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    outcome     text
);

CREATE INDEX cancelled_orders_open ON cancelled_orders (noted_at) WHERE resolved_at IS NULL;
