-- Console sessions (issue 14); see migrations/postgres/0009_console_sessions.sql.
CREATE TABLE console_sessions (
    token_hash      BLOB PRIMARY KEY NOT NULL,
    organization_id BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         BLOB REFERENCES users (id) ON DELETE CASCADE,
    api_key_hash    BLOB,
    csrf_token      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    CHECK ((user_id IS NULL) <> (api_key_hash IS NULL))
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
