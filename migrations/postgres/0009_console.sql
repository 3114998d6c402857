-- The console: people who log in (users), the accounts they belong to with a role
-- (memberships), their sessions, one-time email tokens, invitations, login throttling and MFA
-- recovery codes; the review state of descriptions; account settings the console shows.
-- Times are Unix milliseconds. Secrets are stored only as SHA-256 hashes (session ids, tokens,
-- recovery codes) or sealed with the console key (TOTP secrets).

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    -- Lower-cased; one user per address.
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    -- PHC string (argon2id).
    password_hash TEXT NOT NULL,
    email_verified_at BIGINT,
    -- The TOTP secret sealed with the console key (AES-256-GCM), base64; NULL until enrolled.
    totp_secret TEXT,
    -- The last accepted TOTP time step: a code is accepted once (replay guard).
    totp_last_step BIGINT,
    mfa_enrolled_at BIGINT,
    -- The account the user last worked in.
    last_account_id TEXT,
    created_at BIGINT NOT NULL,
    password_changed_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- owner, admin, developer or viewer.
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE console_sessions (
    -- SHA-256 of the cookie's value, hex: a stolen database cannot be replayed as cookies.
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    account_id TEXT NOT NULL,
    -- password (second factor still due), enrol (MFA enrolment due) or full.
    stage TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    -- The last time the password or a second factor was checked (sensitive actions ask again).
    reauth_at BIGINT NOT NULL,
    ip TEXT,
    user_agent TEXT
);
CREATE INDEX console_sessions_user ON console_sessions (user_id);
CREATE INDEX console_sessions_account ON console_sessions (account_id);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

CREATE TABLE email_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- verify or reset.
    purpose TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX email_tokens_user ON email_tokens (user_id);

CREATE TABLE invitations (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    invited_by TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    accepted_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX invitations_account ON invitations (account_id, id);

-- Failed logins counted where every replica sees them. key: 'user:<email>' or 'ip:<address>'.
CREATE TABLE login_throttle (
    key TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    blocked_until BIGINT
);

ALTER TABLE accounts ADD COLUMN company TEXT;
-- Members must use a second factor (on by default).
ALTER TABLE accounts ADD COLUMN require_mfa BIGINT NOT NULL DEFAULT 1;

-- What a person decided about a description: unreviewed, approved or rejected; by whom (a user
-- id, or an API key id) and when.
ALTER TABLE descriptions ADD COLUMN review_status TEXT NOT NULL DEFAULT 'unreviewed';
ALTER TABLE descriptions ADD COLUMN reviewed_by TEXT;
ALTER TABLE descriptions ADD COLUMN reviewed_at BIGINT;
CREATE INDEX descriptions_account_review ON descriptions (account_id, review_status, id);
