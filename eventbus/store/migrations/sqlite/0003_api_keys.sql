-- API keys: only the SHA-256 of the key text is kept (`sha256:<hex>`); the key is shown once, at creation.

CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL UNIQUE,
    -- comma-separated: publish, subscribe, admin
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- coarse: written in batches by the server, not on every call
    last_used_at INTEGER,
    -- set once: a revoked key is refused and never comes back
    revoked_at INTEGER
);
CREATE INDEX api_keys_active ON api_keys (key_id) WHERE revoked_at IS NULL;
