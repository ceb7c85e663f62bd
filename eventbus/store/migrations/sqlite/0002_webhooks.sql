-- Outbound delivery: per-subscription limits, ordering, credentials and health; ordered deliveries; the attempt log.

ALTER TABLE subscriptions ADD COLUMN rate_limit REAL;
ALTER TABLE subscriptions ADD COLUMN max_concurrency INTEGER;
ALTER TABLE subscriptions ADD COLUMN ordering TEXT NOT NULL DEFAULT 'none';
-- kind-specific credentials (signing secrets, keys): JSON, kept out of `options` so lists never carry them
ALTER TABLE subscriptions ADD COLUMN secrets TEXT NOT NULL DEFAULT '{}';
ALTER TABLE subscriptions ADD COLUMN circuit TEXT NOT NULL DEFAULT 'closed';
ALTER TABLE subscriptions ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN failing_since INTEGER;
ALTER TABLE subscriptions ADD COLUMN warnings_sent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN circuit_opened_at INTEGER;
-- open circuit: no probe before this (a leased probe holds it until its lease runs out)
ALTER TABLE subscriptions ADD COLUMN next_probe_at INTEGER;
-- probes that failed since the circuit opened: the next probe waits 30 s × 2^n (up to 5 min)
ALTER TABLE subscriptions ADD COLUMN failed_probes INTEGER NOT NULL DEFAULT 0;
-- the last failure: a failing streak with a long quiet gap in it starts again
ALTER TABLE subscriptions ADD COLUMN last_failure_at INTEGER;
-- a replay's patterns (NULL: the subscription's own) for the backfill in progress
ALTER TABLE subscriptions ADD COLUMN backfill_patterns TEXT;

-- ordering = subject: the event's subject; only the lowest seq per key may be leased
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
-- 1: an earlier delivery of the same ordering key is still pending or in flight (promoted when it finishes),
-- so the due index never holds deliveries that cannot go
ALTER TABLE deliveries ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;
-- when it was last put back in the queue by a resend or a recovery: max pending age counts from then
ALTER TABLE deliveries ADD COLUMN queued_at INTEGER;
-- a resend: one attempt outside the schedule; a failure does not schedule another
ALTER TABLE deliveries ADD COLUMN manual INTEGER NOT NULL DEFAULT 0;
CREATE INDEX deliveries_ordering ON deliveries (subscription_id, ordering_key, event_seq)
    WHERE state IN ('pending', 'leased') AND ordering_key IS NOT NULL;
-- leases read due deliveries in (next_attempt_at, event_seq) order straight from the index, never sorting
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (subscription_id, next_attempt_at, event_seq)
    WHERE state IN ('pending', 'leased') AND blocked = 0;
CREATE INDEX deliveries_manual ON deliveries (subscription_id) WHERE manual = 1 AND state = 'pending';
CREATE INDEX deliveries_subscription_created ON deliveries (subscription_id, delivery_id);

CREATE TABLE attempts (
    attempt_id TEXT NOT NULL UNIQUE,
    delivery_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    status_code INTEGER,
    error_class TEXT,
    error TEXT,
    response_headers TEXT,
    response_body BLOB,
    -- succeeded | retry | dead | lease_lost
    outcome TEXT NOT NULL,
    next_attempt_at INTEGER,
    probe INTEGER NOT NULL DEFAULT 0,
    manual INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, number);
CREATE INDEX attempts_started ON attempts (started_at);
