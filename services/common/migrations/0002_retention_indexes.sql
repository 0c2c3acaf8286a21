-- The pruner (services/common/retention.py) finds what is past its window by these, instead
-- of scanning a whole table every round. On a large existing table, create them first by
-- hand with CREATE INDEX CONCURRENTLY (same names): this migration then finds them.
CREATE INDEX IF NOT EXISTS outbox_sent_by_age ON outbox (published_at)
    WHERE published_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS inbox_by_age ON inbox (processed_at);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);
