-- Inbound sources (named receivers of provider webhooks) and the raw requests their events came from.

CREATE TABLE sources (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    connector TEXT NOT NULL,
    -- signing secrets, newest first: [{"secret": ..., "expires_at": RFC 3339 or null}] (two during a rotation)
    secrets TEXT NOT NULL DEFAULT '[]',
    options TEXT NOT NULL DEFAULT '{}',
    enabled INTEGER NOT NULL DEFAULT 1,
    rate_limit REAL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX sources_name ON sources (name) WHERE deleted = 0;

-- One row per accepted request, written in the transaction that stores its events; secrets, signatures and
-- URL tokens are redacted before it is written. `answer` is the JSON body the sender got (a redelivery of the
-- same provider delivery, by `dedup_key`, gets it again).
CREATE TABLE raw_requests (
    request_id TEXT NOT NULL UNIQUE,
    source_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT,
    headers TEXT NOT NULL,
    body BLOB,
    remote TEXT,
    dedup_key TEXT,
    first_seq INTEGER,
    last_seq INTEGER,
    answer TEXT NOT NULL
);
CREATE INDEX raw_requests_received ON raw_requests (received_at);
CREATE INDEX raw_requests_dedup ON raw_requests (source_id, dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX raw_requests_seq ON raw_requests (first_seq, last_seq);
