-- Security and privacy records (issue 17): the request log (every authenticated request, kept 2
-- years; IP address and user agent erased when the account is purged), the append-only audit log
-- (security events, kept 7 years with the billing records; its IP address, user agent and a
-- person's id erased on purge), and the account's objection to analytics with its history. Times
-- are Unix milliseconds.

CREATE TABLE request_log (
    -- `rlog_` + a UUIDv7 made from `created_at`: ids sort by arrival, and a time range is an id
    -- range (the UUID starts with the Unix milliseconds), so no index on `created_at` is needed.
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    key_id TEXT,
    -- The request id the answer carried; it may be the caller's, so it is erased on purge.
    request_id TEXT,
    method TEXT NOT NULL,
    -- The route template (`/v1/descriptions/{id}`), never the raw path or the query.
    route TEXT NOT NULL,
    status INTEGER NOT NULL,
    -- From the request's arrival to the answer's head.
    latency_ms INTEGER NOT NULL,
    ip TEXT,
    user_agent TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX request_log_account ON request_log (account_id, id);

CREATE TABLE audit_events (
    -- `aud_` + a UUIDv7: ids sort by creation.
    id TEXT PRIMARY KEY,
    -- The account the event is about; NULL for operator events about no one account.
    account_id TEXT,
    -- user | api_key | operator | stripe | system
    actor_kind TEXT NOT NULL,
    actor_id TEXT,
    -- `key.created`, `account.restricted`, `export.downloaded`, ...
    action TEXT NOT NULL,
    -- What was acted on (`key_…`, `acct_…`, a report id), when not the account itself.
    target TEXT,
    ip TEXT,
    user_agent TEXT,
    -- JSON object: the facts of the change (never a secret).
    details TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX audit_events_account ON audit_events (account_id, id);
CREATE INDEX audit_events_time ON audit_events (created_at);

-- Append-only: a row never changes, except that the purge may erase its IP address, user agent
-- and actor id (set them to NULL). Retention deletes whole rows past their time.
CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events
WHEN NEW.id IS NOT OLD.id
    OR NEW.account_id IS NOT OLD.account_id
    OR NEW.actor_kind IS NOT OLD.actor_kind
    OR NEW.action IS NOT OLD.action
    OR NEW.target IS NOT OLD.target
    OR NEW.details IS NOT OLD.details
    OR NEW.created_at IS NOT OLD.created_at
    OR (NEW.actor_id IS NOT NULL AND NEW.actor_id IS NOT OLD.actor_id)
    OR (NEW.ip IS NOT NULL AND NEW.ip IS NOT OLD.ip)
    OR (NEW.user_agent IS NOT NULL AND NEW.user_agent IS NOT OLD.user_agent)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: only ip, user_agent and actor_id may be erased');
END;

-- Set while the account objects to its usage being used for analytics and service improvement
-- (GDPR Art. 21); every analytics query leaves such accounts out. Kept after the purge, so that
-- the anonymous rows that stay are still left out.
ALTER TABLE accounts ADD COLUMN objected_at INTEGER;

-- Each objection and each consent given again, with its time (the account export lists them).
CREATE TABLE consent_events (
    -- `cns_` + a UUIDv7.
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    -- `analytics`: usage used for analytics and service improvement.
    purpose TEXT NOT NULL,
    -- `objected` | `given`
    decision TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX consent_events_account ON consent_events (account_id, id);
