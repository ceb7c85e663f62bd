-- REST POSTs with an Idempotency-Key: the first answer is kept 24 h and given again to the same key and body.

CREATE TABLE idempotency_keys (
    -- who asked (the API key id, or "" on an open server), the method and path, and the client's key
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    -- NULL while the first request with this key is still being answered
    status INTEGER,
    content_type TEXT,
    body BLOB,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
