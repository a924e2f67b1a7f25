-- A kubectl row is made once per audit event, not once per auditID. The apiserver takes
-- a request's Audit-ID header as the event's auditID, so a client chooses it: two of its
-- writes sharing one would have made one row, and the second write would be missing
-- from the trail. event_key is a digest of the whole event as the apiserver sent it: a
-- batch sent again carries the same events, a second write is a different event.
ALTER TABLE audit_events ADD COLUMN event_key text;

COMMENT ON COLUMN audit_events.event_key IS
    'kubectl rows: SHA-256 of the audit event as reported, which makes the row once';

DROP INDEX audit_events_kubernetes_audit_id;

CREATE UNIQUE INDEX audit_events_kubernetes_event_key
    ON audit_events (event_key) WHERE source = 'kubectl';
