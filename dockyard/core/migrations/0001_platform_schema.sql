-- Platform schema, part 1: the audit trail, idempotency keys and the event outbox.
-- Backup catalog, drill runs and webhook subscriptions come in later migrations.

-- Audit trail: one row per request or reconcile that changed (or tried to change)
-- something. Append-only: rows are inserted with the action they record, in the same
-- transaction as its outbox event, and never updated.
CREATE TABLE audit_events (
    id          bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    groups      text[] NOT NULL DEFAULT '{}',
    action      text NOT NULL,
    resource    text NOT NULL,
    namespace   text,
    name        text,
    outcome     text NOT NULL,
    status_code integer CHECK (status_code BETWEEN 100 AND 599),
    request_id  text,
    trace_id    text,
    source_ip   inet,
    diff        jsonb
);

COMMENT ON TABLE audit_events IS
    'Append-only audit trail: who did what to which object, with what outcome';
COMMENT ON COLUMN audit_events.resource IS 'plural resource name, e.g. environments';
COMMENT ON COLUMN audit_events.diff IS 'changed fields, secrets redacted';

-- Keyset pagination walks (occurred_at, id) newest first; the filtered listings carry
-- the same trailing columns so a filter plus a page is one index range scan.
CREATE INDEX audit_events_page_idx ON audit_events (occurred_at DESC, id DESC);
CREATE INDEX audit_events_actor_page_idx
    ON audit_events (actor, occurred_at DESC, id DESC);
CREATE INDEX audit_events_object_page_idx
    ON audit_events (resource, namespace, name, occurred_at DESC, id DESC);

CREATE FUNCTION audit_events_reject_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: rows cannot be updated'
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_reject_update();

-- Idempotency-Key support for POSTs: the first request with a key reserves it (response
-- still null while it runs); a retry with the same key and request replays the stored
-- response, one with a different request is rejected. Keys are scoped to the caller.
CREATE TABLE idempotency_keys (
    actor           text NOT NULL,
    key             text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    method          text NOT NULL,
    path            text NOT NULL,
    request_hash    text NOT NULL,
    response_status integer CHECK (response_status BETWEEN 100 AND 599),
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (actor, key),
    CHECK (expires_at > created_at)
);

COMMENT ON TABLE idempotency_keys IS
    'Responses to POSTs made with an Idempotency-Key, replayed on retry until expiry';
COMMENT ON COLUMN idempotency_keys.request_hash IS
    'SHA-256 of method, path and body: the same key with another request is a conflict';

-- The purge of expired keys scans by expiry.
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);

-- Transactional outbox: events written in the same transaction as the change they
-- announce, then delivered (server-sent events, webhooks) by a relay that marks them.
CREATE TABLE outbox_events (
    id           bigserial PRIMARY KEY,
    topic        text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);

COMMENT ON TABLE outbox_events IS
    'Events to deliver, written with the change they announce; delivered_at set once sent';

-- The relay reads undelivered events oldest first; delivered ones stay out of the index.
CREATE INDEX outbox_events_undelivered_idx ON outbox_events (id) WHERE delivered_at IS NULL;
