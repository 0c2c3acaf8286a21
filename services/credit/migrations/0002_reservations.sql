-- Holds on credits, one per order (the UNIQUE on order_id is what guarantees it, whatever
-- the redeliveries or races). Amounts are in the account's currency, in minor units.
CREATE TABLE reservations (
    reservation_id uuid        PRIMARY KEY,
    customer_id    uuid        NOT NULL REFERENCES accounts (customer_id),
    order_id       uuid        NOT NULL,
    currency       char(3)     NOT NULL,
    amount         bigint      NOT NULL CHECK (amount > 0),
    state          text        NOT NULL
        CHECK (state IN ('ACTIVE', 'CAPTURED', 'RELEASED', 'EXPIRED')),
    expires_at     timestamptz NOT NULL,
    payment_id     uuid,
    release_reason text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reservations_one_per_order UNIQUE (order_id)
);

-- ListReservations: a customer's holds, newest first, keyset-paged.
CREATE INDEX reservations_by_customer
    ON reservations (customer_id, created_at DESC, reservation_id DESC);

-- The expiry sweeper looks only at active holds.
CREATE INDEX reservations_active_by_expiry ON reservations (expires_at) WHERE state = 'ACTIVE';

-- Orders cancelled before their hold was placed: a late orders.created must not reserve.
CREATE TABLE cancelled_orders (
    order_id     uuid        PRIMARY KEY,
    cancelled_at timestamptz NOT NULL DEFAULT now()
);
