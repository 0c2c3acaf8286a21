-- The pruner deletes resolved cancelled-order notes past the inbox's retention
-- (bootstrap.prune_rules); open ones are never pruned.
CREATE INDEX IF NOT EXISTS cancelled_orders_resolved_by_age ON cancelled_orders (resolved_at)
    WHERE resolved_at IS NOT NULL;
