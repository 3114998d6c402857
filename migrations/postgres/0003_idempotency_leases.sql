-- An Idempotency-Key claim belongs to one request (claim_id) and lasts while that request renews
-- its lease (lease_until, Unix milliseconds). A request whose client left releases its claim; a
-- process that died stops renewing, and the key is free once the lease has run out.
ALTER TABLE idempotency_keys ADD COLUMN claim_id TEXT;
ALTER TABLE idempotency_keys ADD COLUMN lease_until BIGINT;
-- Claims made before leases existed keep the old rule: abandoned ten minutes after creation.
UPDATE idempotency_keys SET lease_until = created_at + 600000 WHERE status IS NULL;
