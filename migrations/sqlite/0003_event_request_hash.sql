-- With an idempotency key, the SHA-256 (hex) of the request that first used it (event type and data
-- bytes): a later request with the key but another body is refused (422 idempotency_key_reused) instead
-- of being answered with the first event. NULL for events without a key and for keys used before this
-- migration (those repeats are answered with the first event, as before). Cleared with the key. The
-- PostgreSQL twin is migrations/postgres/0003_event_request_hash.sql.
ALTER TABLE events ADD COLUMN idempotency_hash TEXT;
