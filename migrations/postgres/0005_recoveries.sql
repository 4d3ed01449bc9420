-- Recoveries ("recover since", issue 13): a webhook's request to receive every event of a window it has
-- not received. A background stage advances each open one (scanned false) in small steps: `cursor_id` is
-- the last event id it looked at, `steps` counts the steps (a compare-and-set, so two workers never take
-- the same step). recovery_deliveries lists the deliveries a recovery created or made due again: its
-- progress is read from their status. The SQLite twin is migrations/sqlite/0006_recoveries.sql.
CREATE TABLE recoveries (
    id              UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    webhook_id      UUID NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    since           TIMESTAMPTZ NOT NULL,
    until           TIMESTAMPTZ NOT NULL,
    cursor_id       UUID,
    steps           BIGINT NOT NULL DEFAULT 0,
    scanned         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX recoveries_open ON recoveries (created_at) WHERE NOT scanned;
CREATE INDEX recoveries_webhook ON recoveries (webhook_id, id);

CREATE TABLE recovery_deliveries (
    recovery_id UUID NOT NULL REFERENCES recoveries (id) ON DELETE CASCADE,
    delivery_id UUID NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    PRIMARY KEY (recovery_id, delivery_id)
);
CREATE INDEX recovery_deliveries_delivery ON recovery_deliveries (delivery_id);
