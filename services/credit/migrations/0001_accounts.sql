-- One wallet per customer, in one currency. The CHECKs make the conservation invariant
-- and non-negative balances the database's job too, not only the code's.
CREATE TABLE accounts (
    customer_id uuid        PRIMARY KEY,
    currency    char(3)     NOT NULL,
    available   bigint      NOT NULL CHECK (available >= 0),
    reserved    bigint      NOT NULL CHECK (reserved >= 0),
    spent       bigint      NOT NULL CHECK (spent >= 0),
    topped_up   bigint      NOT NULL CHECK (topped_up >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_conserved CHECK (topped_up = available + reserved + spent)
);
