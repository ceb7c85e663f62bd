-- Plugin destinations. The small persistent key-value state of plugin destinations (e.g. a refreshed OAuth token), per subscription.
-- Removed with the subscription when it is purged.

CREATE TABLE destination_state (
    subscription_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    -- microseconds since the epoch; NULL: never expires
    expires_at INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (subscription_id, key)
);

-- A failure the operator must act on (a destination's alert) was announced in the current failing streak.
ALTER TABLE subscriptions ADD COLUMN alerted INTEGER NOT NULL DEFAULT 0;
