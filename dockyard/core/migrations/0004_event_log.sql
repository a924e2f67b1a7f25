-- The event log: every Dockyard event (dockyard/core/events.py), in the order it was
-- committed. It replaces outbox_events, which nothing wrote. Server-sent events resume
-- from a row's seq (Last-Event-ID); webhook deliveries are fanned out from it.
--
-- Writers take a transaction-level advisory lock before inserting
-- (dockyard/core/event_log.py), so seq values become visible in increasing order: a
-- reader that has seen seq n can never later find a committed row below n.
DROP TABLE outbox_events;

CREATE TABLE events (
    seq         bigserial PRIMARY KEY,
    id          text NOT NULL UNIQUE CHECK (id ~ '^evt_[0-9a-f]{32}$'),
    type        text NOT NULL,
    resource    text NOT NULL,
    namespace   text NOT NULL,
    name        text NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    body        jsonb NOT NULL
);

COMMENT ON TABLE events IS
    'Dockyard events in commit order; id is stable (uid, generation, transition)';
COMMENT ON COLUMN events.body IS 'the delivered body: {id, type, timestamp, data}';

-- A stream narrowed to one namespace walks that namespace's rows in order.
CREATE INDEX events_namespace_seq_idx ON events (namespace, seq);
-- A new Webhook starts after the last event logged before it was created.
CREATE INDEX events_occurred_at_idx ON events (occurred_at);
