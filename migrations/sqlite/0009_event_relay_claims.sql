-- The outbox relay's claims: a relay pass claims the unpublished events it is about to publish (its
-- process's random id and how long the claim holds, `events.relay_after`), and the relays of other
-- processes skip claimed events until the claim ends. Embedded mode has one process, so its claims
-- are only ever its own; the columns keep both schemas the same. Written only on the relay's path.
-- The PostgreSQL twin is migrations/postgres/0010_event_relay_claims.sql.
ALTER TABLE events ADD COLUMN relay_claimed_by BLOB;
ALTER TABLE events ADD COLUMN relay_claimed_until TEXT;
