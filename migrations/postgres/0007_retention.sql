-- Retention (src/retention.rs): each batch of the retention job walks one of these indexes on from
-- where the last one stopped (time, then id), so a batch reads only the rows it looks at (no scan of
-- the table, no long lock).
-- IF NOT EXISTS: on a large existing database an operator may build them beforehand with
-- CREATE INDEX CONCURRENTLY under these names (docs/operations.md, "Retention"), and this migration
-- then leaves them as they are. The SQLite twin is migrations/sqlite/0006_retention.sql.
CREATE INDEX IF NOT EXISTS events_created ON events (created_at, id);
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (completed_at, id) WHERE status IN ('succeeded', 'dead');
CREATE INDEX IF NOT EXISTS delivery_attempts_started ON delivery_attempts (started_at, id);
CREATE INDEX IF NOT EXISTS delivery_attempts_body_started ON delivery_attempts (started_at, id)
    WHERE response_body IS NOT NULL;
