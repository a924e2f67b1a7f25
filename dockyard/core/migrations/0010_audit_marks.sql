-- Each Audit-ID mark the API mints (dockyard.core.audit_ids) vouches for one audit event:
-- the first the sink sees carrying it. Another event with the same mark is a client who
-- read it (from an apiserver audit log) and sent it with a write of their own, and is
-- recorded as theirs; the same event sent again (a batch the apiserver retries) has the
-- same event_key and is still the API's. A mark is only good for 60 s after it was
-- minted, so its row is kept for a day (dockyard.core.audit_rows.spend_marks purges).
CREATE TABLE audit_marks (
    mark text PRIMARY KEY,
    event_key text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_marks_seen_at_idx ON audit_marks (seen_at);
