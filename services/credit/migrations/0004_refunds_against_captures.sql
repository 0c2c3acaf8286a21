-- A refund gives back credits only against the hold that the refunded payment captured, never
-- more than that hold captured, once per refund (docs/reliability.md "Refunds in Credit").
ALTER TABLE reservations
    ADD COLUMN refunded bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT reservations_refunds_within_capture
        CHECK (refunded >= 0 AND refunded <= amount AND (refunded = 0 OR state = 'CAPTURED'));

-- Every payments.refunded Credit has applied, by refund id (the inbox dedups by event id
-- only: the same refund republished under a new event id must not give credits back twice).
CREATE TABLE applied_refunds (
    refund_id      uuid        PRIMARY KEY,
    payment_id     uuid        NOT NULL,
    order_id       uuid        NOT NULL,
    customer_id    uuid        NOT NULL,
    currency       char(3)     NOT NULL,
    requested      bigint      NOT NULL CHECK (requested > 0),
    given_back     bigint      NOT NULL CHECK (given_back >= 0 AND given_back <= requested),
    applied_at     timestamptz NOT NULL DEFAULT now()
);

-- What Credit could not square with a payment, for people to reconcile: a payment that won at
-- the gateway after its hold was released while the credits were spent elsewhere
-- (LATE_CAPTURE_SHORT), and refunds that gave back less than they asked (REFUND_NOT_CAPTURED:
-- the payment captured nothing here; REFUND_OVER_CAPTURE: more than its capture has left).
CREATE TABLE reconciliation (
    id          bigserial   PRIMARY KEY,
    kind        text        NOT NULL
        CHECK (kind IN ('LATE_CAPTURE_SHORT', 'REFUND_NOT_CAPTURED', 'REFUND_OVER_CAPTURE')),
    customer_id uuid        NOT NULL,
    order_id    uuid        NOT NULL,
    payment_id  uuid        NOT NULL,
    refund_id   uuid,
    currency    char(3)     NOT NULL,
    amount      bigint      NOT NULL,
    detail      text        NOT NULL,
    noted_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX reconciliation_by_payment ON reconciliation (payment_id, kind);
