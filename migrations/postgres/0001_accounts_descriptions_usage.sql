-- Accounts, API keys, stored descriptions with their versions, idempotency records and the usage
-- ledger. Times are Unix milliseconds (BIGINT) so that SQLite and PostgreSQL store the same values.

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    -- NULL once the account is purged: the row stays as an anonymous anchor for billing aggregates.
    name TEXT,
    email TEXT,
    stripe_customer_id TEXT UNIQUE,
    -- Requests per minute; NULL means the server's --rate-limit-per-minute.
    rate_limit_per_minute BIGINT,
    -- 'admin' or 'account' when processing is restricted (new descriptions refused).
    restricted_by TEXT,
    restricted_at BIGINT,
    created_at BIGINT NOT NULL,
    -- Deletion requested: hidden at once, purged at purge_after.
    deleted_at BIGINT,
    purge_after BIGINT,
    purged_at BIGINT
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    -- The first characters of the secret, shown in listings so a key can be recognised.
    prefix TEXT NOT NULL,
    -- SHA-256 of the secret, hex; the secret itself is never stored.
    secret_hash TEXT NOT NULL UNIQUE,
    -- Space-separated: describe, read, manage.
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE descriptions (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    text TEXT NOT NULL,
    -- ai, human or ai_edited.
    provenance TEXT NOT NULL,
    version BIGINT NOT NULL,
    detail TEXT NOT NULL,
    -- JSON object: the generation options the request asked for.
    options TEXT NOT NULL,
    model TEXT NOT NULL,
    asset_id TEXT,
    -- JSON object from the caller, or NULL.
    metadata TEXT,
    image_width BIGINT NOT NULL,
    image_height BIGINT NOT NULL,
    image_format TEXT NOT NULL,
    image_byte_size BIGINT NOT NULL,
    image_sha256 TEXT NOT NULL,
    generated_tokens BIGINT NOT NULL,
    finish_reason TEXT NOT NULL,
    truncated BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- Ids are UUIDv7, so id order is creation order: newest first is `ORDER BY id DESC`.
CREATE INDEX descriptions_account ON descriptions (account_id, id);
CREATE INDEX descriptions_account_asset ON descriptions (account_id, asset_id, id);
CREATE INDEX descriptions_account_sha256 ON descriptions (account_id, image_sha256);

CREATE TABLE description_versions (
    description_id TEXT NOT NULL REFERENCES descriptions(id) ON DELETE CASCADE,
    account_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    text TEXT NOT NULL,
    provenance TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (description_id, version)
);

CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    idempotency_key TEXT NOT NULL,
    route TEXT NOT NULL,
    -- SHA-256 over the parsed request (image hashes and options), hex.
    request_hash TEXT NOT NULL,
    -- NULL while the first request is still running.
    status BIGINT,
    response TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, idempotency_key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- The append-only usage ledger: one row per billable event. Billing reads it.
CREATE TABLE usage_events (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    -- created or retrieved.
    kind TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    -- Database clock, so that replicas' clock skew does not matter.
    occurred_at BIGINT NOT NULL,
    -- The description the event is about.
    source_ref TEXT NOT NULL,
    request_id TEXT NOT NULL,
    -- Set by billing when the row is part of a meter report.
    report_id TEXT,
    reported_at BIGINT
);
CREATE INDEX usage_events_account_time ON usage_events (account_id, occurred_at);
CREATE INDEX usage_events_unreported ON usage_events (report_id, account_id, kind, occurred_at);
-- A description is created once, so it is billed as created once.
CREATE UNIQUE INDEX usage_events_created_once ON usage_events (source_ref) WHERE kind = 'created';

-- Ledger rows past their retention, rolled up per account, day and kind before deletion: the
-- billing aggregates kept for 7 years. No personal identifiers: the account id is random.
CREATE TABLE usage_archive (
    account_id TEXT NOT NULL,
    -- Days since 1970-01-01 UTC.
    day BIGINT NOT NULL,
    kind TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (account_id, day, kind)
);
