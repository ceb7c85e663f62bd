-- The event-type catalogue: every type seen (counted in the append transaction), a sample of its last event's data,
-- and its registered JSON Schema (draft 2020-12), checked at publish.

CREATE TABLE event_types (
    type TEXT PRIMARY KEY,
    -- events of this type stored (duplicates not counted); 0 for a type with a schema registered ahead of its events
    count INTEGER NOT NULL DEFAULT 0,
    -- microseconds since the epoch; NULL: not seen yet
    first_seen INTEGER,
    last_seen INTEGER,
    sample_event_id TEXT,
    -- the last event's data as JSON text, at most 4 KiB; NULL: no data, or none kept (sample_omitted says why)
    sample TEXT,
    -- too_large | not_json; NULL: the sample is kept (or the event had no data)
    sample_omitted TEXT,
    -- the registered JSON Schema as JSON text; NULL: none
    schema TEXT,
    schema_updated_at INTEGER
);
-- Retention forgets types not seen for the retention window (unless they have a schema).
CREATE INDEX event_types_last_seen ON event_types (last_seen) WHERE schema IS NULL;
