-- The log, subscriptions of every kind, and one delivery per (event, subscription).
-- Instants are microseconds since the Unix epoch (UTC).

CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a seq is never reused, even after pruning
    event_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    subject TEXT,
    time TEXT,
    datacontenttype TEXT,
    dataschema TEXT,
    extensions TEXT,
    data BLOB,
    data_kind TEXT,
    received_at INTEGER NOT NULL,
    not_before INTEGER
);
CREATE INDEX events_source_id ON events (source, id);
CREATE INDEX events_received_at ON events (received_at);

CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT,
    patterns TEXT NOT NULL,
    filter TEXT,
    retry_schedule TEXT NOT NULL,
    max_pending_age INTEGER NOT NULL,
    ephemeral INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'active',
    state_reason TEXT,
    options TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_active_at INTEGER NOT NULL,
    backfill_next_seq INTEGER,
    backfill_upto_seq INTEGER,
    -- a start (or seek) position past the end of the log: fan-out skips events before it
    start_seq INTEGER,
    start_at INTEGER
);
CREATE UNIQUE INDEX subscriptions_kind_name ON subscriptions (kind, name) WHERE state != 'deleted';

CREATE TABLE deliveries (
    delivery_id TEXT NOT NULL UNIQUE,
    subscription_id TEXT NOT NULL,
    event_seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- pending: when it is due; leased: when the lease runs out (then it is due again)
    next_attempt_at INTEGER NOT NULL,
    lease_token INTEGER,
    first_attempt_at INTEGER,
    last_attempt_at INTEGER,
    created_at INTEGER NOT NULL,
    finished_at INTEGER,
    dead_reason TEXT,
    last_error TEXT
);
CREATE INDEX deliveries_due ON deliveries (subscription_id, next_attempt_at) WHERE state IN ('pending', 'leased');
CREATE INDEX deliveries_subscription_state ON deliveries (subscription_id, state);
CREATE INDEX deliveries_event ON deliveries (event_seq);
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE finished_at IS NOT NULL;
