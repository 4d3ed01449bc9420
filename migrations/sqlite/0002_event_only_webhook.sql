-- An event meant for one webhook only (webhook.test): the fan-out delivers it there and nowhere else.
-- NULL: every subscribed webhook. No foreign key: deleting the webhook leaves its test events as they
-- are (they then reach no one). The PostgreSQL twin is migrations/postgres/0002_event_only_webhook.sql.
ALTER TABLE events ADD COLUMN webhook_id BLOB;
