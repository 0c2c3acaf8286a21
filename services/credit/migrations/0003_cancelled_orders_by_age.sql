-- The pruner deletes cancelled-order notes past the inbox's retention (bootstrap.prune_rules).
CREATE INDEX IF NOT EXISTS cancelled_orders_by_age ON cancelled_orders (cancelled_at);
