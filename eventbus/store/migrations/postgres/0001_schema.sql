-- mirrors sqlite 0001-0007: same names (tables, columns, indexes) and the same meaning, so SQL ports 1:1.
-- Differences in type only: instants are BIGINT microseconds since the Unix epoch (UTC); 0/1 flags stay INTEGER;
-- JSON is TEXT; BLOBs are BYTEA; REAL is DOUBLE PRECISION. Two tables have no SQLite twin: `event_seq` (the
-- counter AUTOINCREMENT keeps in sqlite_sequence) and `subscriptions_version` (bumped by every change to
-- subscriptions, so each process knows when its matcher cache is stale).

-- 0001: the log, subscriptions of every kind, and one delivery per (event, subscription).

CREATE TABLE events (
    -- allocated by the append from event_seq under pg_advisory_xact_lock: commit order = seq order
    seq BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    subject TEXT,
    time TEXT,
    datacontenttype TEXT,
    dataschema TEXT,
    extensions TEXT,
    data BYTEA,
    data_kind TEXT,
    received_at BIGINT NOT NULL,
    not_before BIGINT
);
CREATE INDEX events_source_id ON events (source, id);
CREATE INDEX events_received_at ON events (received_at);

-- the last seq ever allocated (one row): a seq is never reused, even after pruning
CREATE TABLE event_seq (
    one INTEGER PRIMARY KEY DEFAULT 1 CHECK (one = 1),
    last_seq BIGINT NOT NULL
);
INSERT INTO event_seq (one, last_seq) VALUES (1, 0);

CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT,
    patterns TEXT NOT NULL,
    filter TEXT,
    retry_schedule TEXT NOT NULL,
    max_pending_age BIGINT NOT NULL,
    ephemeral INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'active',
    state_reason TEXT,
    options TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL,
    backfill_next_seq BIGINT,
    backfill_upto_seq BIGINT,
    -- a start (or seek) position past the end of the log: fan-out skips events before it
    start_seq BIGINT,
    start_at BIGINT,
    -- 0002
    rate_limit DOUBLE PRECISION,
    max_concurrency INTEGER,
    ordering TEXT NOT NULL DEFAULT 'none',
    -- kind-specific credentials (signing secrets, keys): JSON, kept out of `options` so lists never carry them
    secrets TEXT NOT NULL DEFAULT '{}',
    circuit TEXT NOT NULL DEFAULT 'closed',
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    failing_since BIGINT,
    warnings_sent INTEGER NOT NULL DEFAULT 0,
    circuit_opened_at BIGINT,
    -- open circuit: no probe before this (a leased probe holds it until its lease runs out)
    next_probe_at BIGINT,
    -- probes that failed since the circuit opened: the next probe waits 30 s x 2^n (up to 5 min)
    failed_probes INTEGER NOT NULL DEFAULT 0,
    -- the last failure: a failing streak with a long quiet gap in it starts again
    last_failure_at BIGINT,
    -- a replay's patterns (NULL: the subscription's own) for the backfill in progress
    backfill_patterns TEXT,
    -- 0005: a failure the operator must act on (a destination's alert) was announced in the current failing streak
    alerted INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX subscriptions_kind_name ON subscriptions (kind, name) WHERE state != 'deleted';

-- bumped (version = version + 1) by every statement that changes subscriptions: matcher caches reload on change
CREATE TABLE subscriptions_version (
    one INTEGER PRIMARY KEY DEFAULT 1 CHECK (one = 1),
    version BIGINT NOT NULL
);
INSERT INTO subscriptions_version (one, version) VALUES (1, 0);

CREATE TABLE deliveries (
    delivery_id TEXT NOT NULL UNIQUE,
    subscription_id TEXT NOT NULL,
    event_seq BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- pending: when it is due; leased: when the lease runs out (then it is due again)
    next_attempt_at BIGINT NOT NULL,
    lease_token BIGINT,
    first_attempt_at BIGINT,
    last_attempt_at BIGINT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    dead_reason TEXT,
    last_error TEXT,
    -- 0002: ordering = subject: the event's subject; only the lowest seq per key may be leased
    ordering_key TEXT,
    -- 1: an earlier delivery of the same ordering key is still pending or in flight (promoted when it finishes),
    -- so the due index never holds deliveries that cannot go
    blocked INTEGER NOT NULL DEFAULT 0,
    -- when it was last put back in the queue by a resend or a recovery: max pending age counts from then
    queued_at BIGINT,
    -- a resend: one attempt outside the schedule; a failure does not schedule another
    manual INTEGER NOT NULL DEFAULT 0
);
-- leases read due deliveries in (next_attempt_at, event_seq) order straight from the index, never sorting
CREATE INDEX deliveries_due ON deliveries (subscription_id, next_attempt_at, event_seq)
    WHERE state IN ('pending', 'leased') AND blocked = 0;
CREATE INDEX deliveries_subscription_state ON deliveries (subscription_id, state);
CREATE INDEX deliveries_event ON deliveries (event_seq);
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX deliveries_ordering ON deliveries (subscription_id, ordering_key, event_seq)
    WHERE state IN ('pending', 'leased') AND ordering_key IS NOT NULL;
CREATE INDEX deliveries_manual ON deliveries (subscription_id) WHERE manual = 1 AND state = 'pending';
CREATE INDEX deliveries_subscription_created ON deliveries (subscription_id, delivery_id);

-- 0002: the attempt log.
CREATE TABLE attempts (
    attempt_id TEXT NOT NULL UNIQUE,
    delivery_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    started_at BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    status_code INTEGER,
    error_class TEXT,
    error TEXT,
    response_headers TEXT,
    response_body BYTEA,
    -- succeeded | retry | dead | lease_lost
    outcome TEXT NOT NULL,
    next_attempt_at BIGINT,
    probe INTEGER NOT NULL DEFAULT 0,
    manual INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, number);
CREATE INDEX attempts_started ON attempts (started_at);

-- 0003: API keys: only the SHA-256 of the key text is kept (`sha256:<hex>`); the key is shown once, at creation.
CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL UNIQUE,
    -- comma-separated: publish, subscribe, admin
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- coarse: written in batches by the server, not on every call
    last_used_at BIGINT,
    -- set once: a revoked key is refused and never comes back
    revoked_at BIGINT
);
CREATE INDEX api_keys_active ON api_keys (key_id) WHERE revoked_at IS NULL;

-- 0004: inbound sources (named receivers of provider webhooks) and the raw requests their events came from.
CREATE TABLE sources (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    connector TEXT NOT NULL,
    -- signing secrets, newest first: [{"secret": ..., "expires_at": RFC 3339 or null}] (two during a rotation)
    secrets TEXT NOT NULL DEFAULT '[]',
    options TEXT NOT NULL DEFAULT '{}',
    enabled INTEGER NOT NULL DEFAULT 1,
    rate_limit DOUBLE PRECISION,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX sources_name ON sources (name) WHERE deleted = 0;

-- One row per accepted request, written in the transaction that stores its events; secrets, signatures and
-- URL tokens are redacted before it is written. `answer` is the JSON body the sender got (a redelivery of the
-- same provider delivery, by `dedup_key`, gets it again).
CREATE TABLE raw_requests (
    request_id TEXT NOT NULL UNIQUE,
    source_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT,
    headers TEXT NOT NULL,
    body BYTEA,
    remote TEXT,
    dedup_key TEXT,
    first_seq BIGINT,
    last_seq BIGINT,
    answer TEXT NOT NULL
);
CREATE INDEX raw_requests_received ON raw_requests (received_at);
CREATE INDEX raw_requests_dedup ON raw_requests (source_id, dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX raw_requests_seq ON raw_requests (first_seq, last_seq);

-- 0005: the small persistent key-value state of plugin destinations (e.g. a refreshed OAuth token), per
-- subscription. Removed with the subscription when it is purged.
CREATE TABLE destination_state (
    subscription_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    -- microseconds since the epoch; NULL: never expires
    expires_at BIGINT,
    updated_at BIGINT NOT NULL,
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

-- 0006: REST POSTs with an Idempotency-Key: the first answer is kept 24 h and given again to the same key and body.
CREATE TABLE idempotency_keys (
    -- who asked (the API key id, or "" on an open server), the method and path, and the client's key
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    -- NULL while the first request with this key is still being answered
    status INTEGER,
    content_type TEXT,
    body BYTEA,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- 0007: the event-type catalogue: every type seen (counted in the append transaction), a sample of its last
-- event's data, and its registered JSON Schema (draft 2020-12), checked at publish.
CREATE TABLE event_types (
    type TEXT PRIMARY KEY,
    -- events of this type stored (duplicates not counted); 0 for a type with a schema registered ahead of its events
    count BIGINT NOT NULL DEFAULT 0,
    -- microseconds since the epoch; NULL: not seen yet
    first_seen BIGINT,
    last_seen BIGINT,
    sample_event_id TEXT,
    -- the last event's data as JSON text, at most 4 KiB; NULL: no data, or none kept (sample_omitted says why)
    sample TEXT,
    -- too_large | not_json; NULL: the sample is kept (or the event had no data)
    sample_omitted TEXT,
    -- the registered JSON Schema as JSON text; NULL: none
    schema TEXT,
    schema_updated_at BIGINT
);
-- Retention forgets types not seen for the retention window (unless they have a schema).
CREATE INDEX event_types_last_seen ON event_types (last_seen) WHERE schema IS NULL;

-- Fencing tokens of leases (deliveries.lease_token): every lease of every delivery takes the next value, so a
-- token is never handed out twice and a later lease always holds a larger one than the lease it replaced.
CREATE SEQUENCE lease_tokens AS BIGINT;
