-- The small persistent key-value state of plugin destinations (e.g. a refreshed OAuth token), per subscription.
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
