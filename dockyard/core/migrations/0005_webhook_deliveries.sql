-- Webhook deliveries: one row per (Webhook, event), fanned out from the event log by
-- the operator's dispatcher (dockyard/operator/webhooks/). Replicas claim due rows with
-- FOR UPDATE SKIP LOCKED and a lease (next_at moved past the attempt), so each attempt
-- is made by one of them. A row is pending until delivered, or dead once it has been
-- undelivered for DOCKYARD_WEBHOOK_DEAD_LETTER_AFTER (POST .../redeliver revives it).
CREATE TABLE webhook_deliveries (
    id           bigserial PRIMARY KEY,
    webhook_uid  text NOT NULL,
    namespace    text NOT NULL,
    webhook      text NOT NULL,
    event_seq    bigint NOT NULL REFERENCES events (seq),
    event_id     text NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts     integer NOT NULL DEFAULT 0,
    due_since    timestamptz NOT NULL DEFAULT now(),
    next_at      timestamptz NOT NULL DEFAULT now(),
    last_status  integer CHECK (last_status BETWEEN 100 AND 599),
    last_error   text,
    delivered_at timestamptz,
    UNIQUE (webhook_uid, event_id)
);

COMMENT ON TABLE webhook_deliveries IS
    'One delivery of one event to one Webhook: pending, delivered or dead (dead letter)';

CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_uid, state);

-- How far each Webhook's fan-out has read the event log.
CREATE TABLE webhook_cursors (
    webhook_uid text PRIMARY KEY,
    seq         bigint NOT NULL
);
