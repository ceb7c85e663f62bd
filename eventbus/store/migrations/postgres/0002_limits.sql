-- 0002 (PostgreSQL only; SQLite has one process per file and keeps its limits in memory): a subscription's
-- max_concurrency and rate_limit hold across every process sharing the database (pg_limits.acquire_send_slots).

-- A send in flight is a leased delivery marked with the token of the lease it is sent under, until
-- `sending_until`: it stops counting when the attempt is recorded (the delivery leaves `leased`), when the lease is
-- released or taken again (a new token), or when `sending_until` passes (the process died mid-send). Deliveries
-- leased ahead and only queued carry no mark: they do not hold a slot.
ALTER TABLE deliveries ADD COLUMN sending_token BIGINT, ADD COLUMN sending_until BIGINT;

-- One token bucket per rate-limited subscription, shared by every process; its row lock also serialises the grants
-- of one subscription, so no two processes take the same slot.
CREATE TABLE subscription_limits (
    subscription_id TEXT PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
    -- tokens left at `updated_at` (microseconds since the epoch); refilled at the rate up to a burst of 1 s worth
    tokens DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);
