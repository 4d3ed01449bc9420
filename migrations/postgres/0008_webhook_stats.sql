-- Endpoint statistics (GET /webhooks/{id}/stats), kept as outcomes are recorded, in the transaction
-- that records them: one row per webhook and minute with the attempts by class and a fixed latency
-- histogram (bucket upper bounds in src/store/stats.rs: LATENCY_BOUNDS_MS), and one row per webhook with
-- its recent health. A window's figures are the sum of its minutes' rows: nothing scans the attempts.
CREATE TABLE webhook_stats (
    webhook_id      UUID NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    minute          BIGINT NOT NULL,  -- Unix time / 60 of the attempts' end
    attempts        BIGINT NOT NULL,
    succeeded       BIGINT NOT NULL,
    class_2xx       BIGINT NOT NULL,
    class_3xx       BIGINT NOT NULL,
    class_4xx       BIGINT NOT NULL,
    class_5xx       BIGINT NOT NULL,
    class_network   BIGINT NOT NULL,
    class_timeout   BIGINT NOT NULL,
    latency_0       BIGINT NOT NULL,
    latency_1       BIGINT NOT NULL,
    latency_2       BIGINT NOT NULL,
    latency_3       BIGINT NOT NULL,
    latency_4       BIGINT NOT NULL,
    latency_5       BIGINT NOT NULL,
    latency_6       BIGINT NOT NULL,
    latency_7       BIGINT NOT NULL,
    latency_8       BIGINT NOT NULL,
    latency_9       BIGINT NOT NULL,
    latency_10      BIGINT NOT NULL,
    latency_11      BIGINT NOT NULL,
    PRIMARY KEY (webhook_id, minute)
);

CREATE TABLE webhook_health (
    webhook_id            UUID PRIMARY KEY NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    last_success_at       TIMESTAMPTZ,
    last_failure_at       TIMESTAMPTZ,
    last_status_code      BIGINT,
    consecutive_failures  BIGINT NOT NULL DEFAULT 0
);
