-- Stripe metered billing: the outbox of meter reports (one row = one Stripe meter event), the
-- webhook events already applied, and the mark left on an account whose customer Stripe deleted.
-- Times are Unix milliseconds except event_ts (Unix seconds, what Stripe's `timestamp` takes).

CREATE TABLE meter_reports (
    -- Also Stripe's `identifier`: a resend of the same report can never be counted twice.
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    -- Copied in when the report is built, so a later change of mapping does not rewrite history.
    stripe_customer_id TEXT NOT NULL,
    -- The ledger kind (created, retrieved) and the Stripe meter event name it was sent as.
    kind TEXT NOT NULL,
    event_name TEXT NOT NULL,
    value BIGINT NOT NULL,
    event_ts BIGINT NOT NULL,
    -- UTC hour (Unix ms) of the ledger rows it sums, for reconciliation against Stripe's summaries.
    bucket_start BIGINT NOT NULL,
    -- pending -> sent, or a dead end an operator sees and can retry: failed, expired,
    -- needs_reconcile.
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    -- Idempotency-Key = id:key_gen; bumped when Stripe may have stored a failed answer for the old key.
    key_gen BIGINT NOT NULL DEFAULT 0,
    -- Set when an attempt may have reached Stripe without a verdict (timeout, 5xx).
    in_doubt_since BIGINT,
    sent_at BIGINT,
    stripe_livemode BIGINT,
    last_result TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX meter_reports_due ON meter_reports (status, next_attempt_at);
CREATE INDEX meter_reports_customer ON meter_reports (stripe_customer_id, status);
CREATE INDEX meter_reports_account ON meter_reports (account_id, status);

-- Stripe retries webhooks and may deliver one twice: an event is applied once.
CREATE TABLE stripe_webhook_events (
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    received_at BIGINT NOT NULL
);

-- Set when Stripe told us the account's customer was deleted; --stripe-create-customers then
-- leaves the account alone until an operator maps a customer again.
ALTER TABLE accounts ADD COLUMN stripe_customer_deleted_at BIGINT;
