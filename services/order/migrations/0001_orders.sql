-- Orders and their lifecycle. Items live in the row (jsonb): they are written once, always
-- read with their order, and all share the order's currency, so each stores only sku,
-- quantity and unit price in minor units.
CREATE TABLE orders (
    order_id       uuid        PRIMARY KEY,
    customer_id    uuid        NOT NULL,
    currency       char(3)     NOT NULL,
    total          bigint      NOT NULL CHECK (total > 0),
    status         text        NOT NULL
        CHECK (status IN ('PENDING', 'RESERVED', 'REJECTED', 'PAID', 'PAYMENT_FAILED',
                          'CANCELLED', 'REFUNDED')),
    reservation_id uuid,
    payment_id     uuid,
    failure_reason text,
    items          jsonb       NOT NULL CHECK (jsonb_typeof(items) = 'array'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- ListOrders: a customer's orders, newest first, keyset-paged on (created_at, order_id).
CREATE INDEX orders_by_customer ON orders (customer_id, created_at DESC, order_id DESC);
