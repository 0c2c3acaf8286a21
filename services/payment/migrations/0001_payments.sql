-- Payments: the system of record. UNIQUE (order_id) is one payment per order: a concurrent
-- burst of ProcessPayment calls for one order inserts one row and charges once, whatever
-- the interleaving (INSERT … ON CONFLICT (order_id) DO NOTHING, never check-then-insert).
CREATE TABLE payments (
    payment_id         uuid        PRIMARY KEY,
    order_id           uuid        NOT NULL,
    customer_id        uuid        NOT NULL,
    reservation_id     uuid,
    currency           char(3)     NOT NULL,
    amount             bigint      NOT NULL CHECK (amount > 0),
    payment_method     text        NOT NULL CHECK (payment_method IN
        ('CREDIT_CARD', 'DEBIT_CARD', 'PAYPAL', 'APPLE_PAY', 'GOOGLE_PAY')),
    status             text        NOT NULL CHECK (status IN
        ('PENDING', 'SUCCEEDED', 'FAILED', 'PARTIALLY_REFUNDED', 'REFUNDED')),
    error_code         text,
    error_message      text,
    failure_reason     text,
    transaction_id     text,
    is_simulated       boolean     NOT NULL DEFAULT false,
    simulated_response text,
    refunded           bigint      NOT NULL DEFAULT 0
        CHECK (refunded >= 0 AND refunded <= amount),
    created_at         timestamptz NOT NULL DEFAULT now(),
    processed_at       timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_one_per_order UNIQUE (order_id),
    -- Only the gateway's answer settles a payment, and only settled payments have one.
    CONSTRAINT payments_processed_when_settled
        CHECK ((status = 'PENDING') = (processed_at IS NULL)),
    -- The status says how much went back: nothing, some, or all of it.
    CONSTRAINT payments_refund_status CHECK (
        CASE status
            WHEN 'PARTIALLY_REFUNDED' THEN refunded > 0 AND refunded < amount
            WHEN 'REFUNDED' THEN refunded = amount
            ELSE refunded = 0
        END)
);

-- ListPayments by customer, newest first, keyset-paged (by order: the unique index above
-- finds the one row).
CREATE INDEX payments_by_customer ON payments (customer_id, created_at DESC, payment_id DESC);
CREATE INDEX payments_by_order ON payments (order_id, created_at DESC, payment_id DESC);

-- Recovery looks only at payments a crash may have left at the gateway's door.
CREATE INDEX payments_pending ON payments (created_at) WHERE status = 'PENDING';

-- Refunds: recorded PENDING before the gateway is asked; request_id (AIP-155) is unique, so
-- a retried RefundPayment finds its refund instead of making a second one.
CREATE TABLE refunds (
    refund_id           uuid        PRIMARY KEY,
    payment_id          uuid        NOT NULL REFERENCES payments (payment_id),
    currency            char(3)     NOT NULL,
    amount              bigint      NOT NULL CHECK (amount > 0),
    reason              text        NOT NULL DEFAULT '',
    status              text        NOT NULL CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED')),
    transaction_id      text,
    error_code          text,
    error_message       text,
    request_id          uuid        NOT NULL,
    request_fingerprint bytea       NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    processed_at        timestamptz,
    CONSTRAINT refunds_request_id_unique UNIQUE (request_id),
    CONSTRAINT refunds_processed_when_settled
        CHECK ((status = 'PENDING') = (processed_at IS NULL))
);

CREATE INDEX refunds_by_payment ON refunds (payment_id, created_at);
CREATE INDEX refunds_pending ON refunds (created_at) WHERE status = 'PENDING';
