-- Retention (src/retention.rs): each batch of the retention job walks one of these indexes from its
-- oldest entry, so a batch reads only the rows it removes. New database files are created with
-- auto_vacuum = INCREMENTAL (src/store/sqlite.rs), and the job gives freed pages back to the file system
-- after a pass. The PostgreSQL twin is migrations/postgres/0007_retention.sql.
CREATE INDEX IF NOT EXISTS events_created ON events (created_at);
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (completed_at) WHERE status IN ('succeeded', 'dead');
CREATE INDEX IF NOT EXISTS delivery_attempts_started ON delivery_attempts (started_at);
CREATE INDEX IF NOT EXISTS delivery_attempts_body_started ON delivery_attempts (started_at)
    WHERE response_body IS NOT NULL;
