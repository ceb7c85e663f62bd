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

-- Which subscriptions use a shared state scope (kept in destination_state under "<kind>/<scope>"): a scope's
-- values are removed once no subscription that used it is left.
CREATE TABLE destination_scope_users (
    scope TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    PRIMARY KEY (scope, subscription_id)
);
CREATE INDEX destination_scope_users_subscription ON destination_scope_users (subscription_id);

-- A failure the operator must act on (a destination's alert) was announced in the current failing streak.
ALTER TABLE subscriptions ADD COLUMN alerted INTEGER NOT NULL DEFAULT 0;
