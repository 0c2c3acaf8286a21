-- WatchOrder (DESIGN §11): every change of an order's status is announced on the database's
-- `shop_order_status` channel, with the fields a change can touch (items, total and
-- customer never change), so a watcher needs no read per change. NOTIFY is transactional:
-- the listeners (one connection per Order process) hear it when, and only if, the change
-- commits, in commit order, whichever replica or statement made it. A trigger rather than
-- a line in the repository: no status changes without it.
--
-- A payload must stay under 8000 bytes: a failure_reason too long to fit (none is today)
-- is left out and the payload says `reread`, and the watcher reads the row instead.
CREATE FUNCTION notify_order_status() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    fits boolean := octet_length(coalesce(NEW.failure_reason, '')) <= 4000;
BEGIN
    PERFORM pg_notify('shop_order_status', json_build_object(
        'order_id', NEW.order_id,
        'status', NEW.status,
        'reservation_id', NEW.reservation_id,
        'payment_id', NEW.payment_id,
        'failure_reason', CASE WHEN fits THEN NEW.failure_reason END,
        'updated_at', NEW.updated_at,
        'reread', NOT fits
    )::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER orders_status_notify
    AFTER UPDATE OF status ON orders
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION notify_order_status();
