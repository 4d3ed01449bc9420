-- Console sessions (issue 14): a signed-in browser holds a random 256-bit token in an HttpOnly cookie;
-- only its SHA-256 is kept here. A session is the organization's user behind a JWT (user_id) or an API
-- key (api_key_hash: the key's SHA-256, as api_keys.key_hash, so that every request re-checks the key
-- through authentication). csrf_token is the session's form token. A session ends when last_seen_at is
-- older than console.idle_timeout or at expires_at (console.absolute_timeout after sign-in). The
-- SQLite twin is migrations/sqlite/0008_console_sessions.sql.
CREATE TABLE console_sessions (
    token_hash      BYTEA PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         UUID REFERENCES users (id) ON DELETE CASCADE,
    api_key_hash    BYTEA,
    csrf_token      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    last_seen_at    TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    CHECK ((user_id IS NULL) <> (api_key_hash IS NULL))
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
