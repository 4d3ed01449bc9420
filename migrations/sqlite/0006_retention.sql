-- Retention (src/retention.rs): each batch of the retention job walks one of these indexes on from
-- where the last one stopped (time, then id), so a batch reads only the rows it looks at. New database
-- files are created with auto_vacuum = INCREMENTAL (src/store/sqlite.rs), and the job gives freed pages
-- back to the file system after a pass. The PostgreSQL twin is migrations/postgres/0007_retention.sql.
CREATE INDEX IF NOT EXISTS events_created ON events (created_at, id);
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (completed_at, id) WHERE status IN ('succeeded', 'dead');
CREATE INDEX IF NOT EXISTS delivery_attempts_started ON delivery_attempts (started_at, id);
CREATE INDEX IF NOT EXISTS delivery_attempts_body_started ON delivery_attempts (started_at, id)
    WHERE response_body IS NOT NULL;
