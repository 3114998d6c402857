-- Bulk jobs: a job (its options, its webhook URL, its counts), its items (one image each, in input
-- order, claimed with a lease by the runner of any replica), the webhook deliveries it caused
-- (an outbox, retried for a day), and each account's webhook signing secret. Times are Unix
-- milliseconds.

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    -- queued -> running -> succeeded | failed | cancelled
    status TEXT NOT NULL,
    -- The options every item is described with (JSON: model, outputs, detail, language, ...).
    options TEXT NOT NULL,
    webhook_url TEXT,
    -- Kept in step with the items in the transaction that moves an item on.
    total_items INTEGER NOT NULL,
    succeeded_items INTEGER NOT NULL DEFAULT 0,
    failed_items INTEGER NOT NULL DEFAULT 0,
    cancelled_items INTEGER NOT NULL DEFAULT 0,
    -- When an item of the job was last claimed: the runner serves the account (then the job)
    -- waited on longest, so one account's huge job cannot starve another's.
    last_claim_at INTEGER,
    idempotency_key TEXT,
    request_hash TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER
);
CREATE INDEX jobs_account ON jobs (account_id, id);
CREATE INDEX jobs_active ON jobs (status, account_id);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (account_id, idempotency_key);

CREATE TABLE job_items (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    account_id TEXT NOT NULL,
    -- Input order, from 0.
    position INTEGER NOT NULL,
    image_url TEXT NOT NULL,
    asset_id TEXT,
    context TEXT,
    metadata TEXT,
    -- pending (claimed while lease_until is in the future) -> succeeded | failed | cancelled
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    -- Set in the transaction that stores the description and its usage row.
    description_id TEXT,
    error_code TEXT,
    error_message TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE UNIQUE INDEX job_items_order ON job_items (job_id, position);
CREATE INDEX job_items_due ON job_items (job_id, status, next_attempt_at);
CREATE INDEX job_items_pending ON job_items (status, created_at);

CREATE TABLE webhook_deliveries (
    -- Also the `Altimage-Delivery` header and the event's `id`: receivers de-duplicate on it.
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    -- The exact body sent (every attempt sends the same bytes; the signature's time changes).
    payload TEXT NOT NULL,
    -- pending -> delivered | failed (gave up after a day)
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    last_status INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, id);

-- The key webhooks are signed with (HMAC-SHA256). It must be kept, not hashed: the server signs
-- with it. Shown to the account once, when it is made or rotated.
ALTER TABLE accounts ADD COLUMN webhook_secret TEXT;
