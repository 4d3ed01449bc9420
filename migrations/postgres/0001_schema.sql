-- Herald's schema for PostgreSQL (production mode). The SQLite twin is migrations/sqlite/0001_schema.sql;
-- keep the two in step.

CREATE TABLE organizations (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    is_active   BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    id              UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email           TEXT NOT NULL,
    name            TEXT,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    is_active       BOOLEAN NOT NULL DEFAULT TRUE,
    created_at      TIMESTAMPTZ NOT NULL
);
-- Emails are stored lowercased; one account per email per organization.
CREATE UNIQUE INDEX users_organization_email ON users (organization_id, email);

CREATE TABLE api_keys (
    id              UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_hash        BYTEA NOT NULL,          -- SHA-256 of the key; the key itself is never stored
    prefix          TEXT NOT NULL,          -- 8 characters after the key prefix, to tell keys apart
    name            TEXT NOT NULL,
    purpose         TEXT NOT NULL,
    is_active       BOOLEAN NOT NULL DEFAULT TRUE,
    expires_at      TIMESTAMPTZ,
    last_used_at    TIMESTAMPTZ,
    total_requests  BIGINT NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    revoked_at      TIMESTAMPTZ
);
CREATE UNIQUE INDEX api_keys_hash ON api_keys (key_hash);
CREATE INDEX api_keys_user ON api_keys (user_id, created_at);
CREATE INDEX api_keys_organization ON api_keys (organization_id, created_at);

CREATE TABLE webhooks (
    id                          UUID PRIMARY KEY,
    organization_id             UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    url                         TEXT NOT NULL,
    events                      TEXT NOT NULL,  -- '*' or sorted comma-separated event types
    secret_key_id               TEXT NOT NULL,  -- id of the key that sealed the secret
    secret_ciphertext           BYTEA NOT NULL,  -- nonce || XChaCha20-Poly1305 ciphertext
    previous_secret_key_id      TEXT,           -- the secret before the last rotation ...
    previous_secret_ciphertext  BYTEA,
    previous_secret_expires_at  TIMESTAMPTZ,           -- ... still signing until this time
    is_active                   BOOLEAN NOT NULL DEFAULT TRUE,
    description                 TEXT,
    disabled_reason             TEXT,
    consecutive_dead            BIGINT NOT NULL DEFAULT 0,
    created_at                  TIMESTAMPTZ NOT NULL,
    updated_at                  TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhooks_organization ON webhooks (organization_id, created_at);

-- The outbox: an event is committed here before it is acknowledged, then published.
CREATE TABLE events (
    id              UUID PRIMARY KEY,  -- UUIDv7: ordered by creation, used as the cursor
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,              -- the exact body every endpoint receives
    idempotency_key TEXT,                       -- cleared once the idempotency window has passed
    created_at      TIMESTAMPTZ NOT NULL,
    published_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX events_idempotency ON events (organization_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The janitor clears keys older than the idempotency window.
CREATE INDEX events_idempotency_age ON events (created_at) WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_unpublished ON events (created_at) WHERE published_at IS NULL;
CREATE INDEX events_organization ON events (organization_id, id);
CREATE INDEX events_organization_type ON events (organization_id, event_type, id);

-- One row per (event, subscribed webhook).
CREATE TABLE deliveries (
    id               UUID PRIMARY KEY,
    event_id         UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    webhook_id       UUID NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    organization_id  UUID NOT NULL,
    -- pending: waits for next_attempt_at; queued: handed to the queue (next_attempt_at is when the
    -- sweeper hands it over again); succeeded and dead are final until a redrive.
    status           TEXT NOT NULL CHECK (status IN ('pending', 'queued', 'succeeded', 'dead')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    last_status_code BIGINT,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    completed_at     TIMESTAMPTZ
);
CREATE UNIQUE INDEX deliveries_event_webhook ON deliveries (event_id, webhook_id);
CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status IN ('pending', 'queued');
CREATE INDEX deliveries_dead ON deliveries (organization_id, updated_at) WHERE status = 'dead';

CREATE TABLE delivery_attempts (
    id              UUID PRIMARY KEY,
    delivery_id     UUID NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt_number  BIGINT NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    duration_ms     BIGINT NOT NULL,
    status_code     BIGINT,
    response_body   TEXT,   -- truncated to delivery.max_response_bytes
    error           TEXT
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, attempt_number);
