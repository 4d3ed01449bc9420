-- Endpoint statistics (GET /webhooks/{id}/stats), kept as outcomes are recorded, in the transaction
-- that records them: one row per webhook and minute with the attempts by class and a fixed latency
-- histogram (bucket upper bounds in src/store/stats.rs: LATENCY_BOUNDS_MS), and one row per webhook with
-- its recent health. A window's figures are the sum of its minutes' rows: nothing scans the attempts.
CREATE TABLE webhook_stats (
    webhook_id      BLOB NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    minute          INTEGER NOT NULL,  -- Unix time / 60 of the attempts' end
    attempts        INTEGER NOT NULL,
    succeeded       INTEGER NOT NULL,
    class_2xx       INTEGER NOT NULL,
    class_3xx       INTEGER NOT NULL,
    class_4xx       INTEGER NOT NULL,
    class_5xx       INTEGER NOT NULL,
    class_network   INTEGER NOT NULL,
    class_timeout   INTEGER NOT NULL,
    latency_0       INTEGER NOT NULL,
    latency_1       INTEGER NOT NULL,
    latency_2       INTEGER NOT NULL,
    latency_3       INTEGER NOT NULL,
    latency_4       INTEGER NOT NULL,
    latency_5       INTEGER NOT NULL,
    latency_6       INTEGER NOT NULL,
    latency_7       INTEGER NOT NULL,
    latency_8       INTEGER NOT NULL,
    latency_9       INTEGER NOT NULL,
    latency_10      INTEGER NOT NULL,
    latency_11      INTEGER NOT NULL,
    PRIMARY KEY (webhook_id, minute)
);

CREATE TABLE webhook_health (
    webhook_id            BLOB PRIMARY KEY NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    last_success_at       TEXT,
    last_failure_at       TEXT,
    last_status_code      INTEGER,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0
);
