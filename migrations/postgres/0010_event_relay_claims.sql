-- The outbox relay's claims: a relay pass claims the unpublished events it is about to publish (its
-- process's random id and how long the claim holds, `events.relay_after`), and the relays of other
-- processes skip claimed events until the claim ends, so that after an outage each event left
-- unpublished is published again by one process, not by every process running a relay. Claims are
-- written only on the relay's path (events left unpublished), never when an event is accepted.
-- Nullable without a default, so adding them rewrites no rows. The SQLite twin is
-- migrations/sqlite/0009_event_relay_claims.sql.
ALTER TABLE events ADD COLUMN relay_claimed_by UUID;
ALTER TABLE events ADD COLUMN relay_claimed_until TIMESTAMPTZ;
