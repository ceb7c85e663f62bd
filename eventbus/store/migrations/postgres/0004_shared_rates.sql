-- 0004 (PostgreSQL only; SQLite has one process per file and keeps these buckets in memory): a plugin kind's
-- shared `RateLimit` (one send rate for every subscription naming the same key, e.g. one RD Station account)
-- holds across every process sharing the database (pg_limits.acquire_send_slots, `shared`).

-- One token bucket per shared key (a digest of the kind and the plugin's key: a key may be derived from a
-- credential), at the lowest rate of its members; its row lock serialises the grants of every subscription sharing
-- it. `rate` is the rate it was last refilled at: a change of the lowest rate keeps what was spent.
CREATE TABLE shared_rate_buckets (
    bucket TEXT PRIMARY KEY,
    rate DOUBLE PRECISION NOT NULL,
    -- tokens left at `updated_at` (microseconds since the epoch); refilled at `rate` up to a burst of 1 s worth
    tokens DOUBLE PRECISION NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Which subscription asks for which bucket at which rate, as of its settings at `settings_at` (its `updated_at`):
-- a member counts toward the lowest rate while its subscription is active and unchanged since (an update may have
-- moved it to another key or dropped the limit; its next grant writes the new one). Gone with the subscription.
CREATE TABLE shared_rate_members (
    subscription_id TEXT PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
    bucket TEXT NOT NULL,
    rate DOUBLE PRECISION NOT NULL,
    settings_at BIGINT NOT NULL
);
CREATE INDEX shared_rate_members_bucket ON shared_rate_members (bucket);
