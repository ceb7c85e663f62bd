-- Fencing tokens of leases (deliveries.lease_token): every lease of every delivery takes the next value, so a
-- token is never handed out twice and a later lease always holds a larger one than the lease it replaced.
CREATE SEQUENCE lease_tokens AS BIGINT;
