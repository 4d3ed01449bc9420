-- Recoveries ("recover since", issue 13): a webhook's request to receive every event of a window it has
-- not received. A background stage advances each open one (scanned = 0) in small steps: `cursor_id` is
-- the last event id it looked at, `steps` counts the steps (a compare-and-set, so two workers never take
-- the same step). recovery_deliveries lists the deliveries a recovery created or made due again: its
-- progress is read from their status. The PostgreSQL twin is migrations/postgres/0007_recoveries.sql.
CREATE TABLE recoveries (
    id              BLOB PRIMARY KEY NOT NULL,
    organization_id BLOB NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    webhook_id      BLOB NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    since           TEXT NOT NULL,
    until           TEXT NOT NULL,
    cursor_id       BLOB,
    steps           INTEGER NOT NULL DEFAULT 0,
    scanned         INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL
);
CREATE INDEX recoveries_open ON recoveries (created_at) WHERE scanned = 0;
CREATE INDEX recoveries_webhook ON recoveries (webhook_id, id);

CREATE TABLE recovery_deliveries (
    recovery_id BLOB NOT NULL REFERENCES recoveries (id) ON DELETE CASCADE,
    delivery_id BLOB NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    PRIMARY KEY (recovery_id, delivery_id)
);
CREATE INDEX recovery_deliveries_delivery ON recovery_deliveries (delivery_id);
