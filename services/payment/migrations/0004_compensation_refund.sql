-- The compensating refund of a cancelled order is tied to the noted order itself, not to a
-- request id: a derived request id could be guessed and spent first by a caller (a 1-unit
-- refund with it would have stopped the job from refunding the rest). Set in the same
-- transaction as the refund it names; one per order.
ALTER TABLE cancelled_orders ADD COLUMN refund_id uuid UNIQUE;
