-- The audit trail records every door: the REST API (rest), the kube-apiserver's audit
-- webhook for writes made with kubectl or any other client (kubectl), and the
-- operator's own actions with their reason (operator). Rows written before this
-- migration came through REST.
ALTER TABLE audit_events
    ADD COLUMN source text NOT NULL DEFAULT 'rest'
    CHECK (source IN ('rest', 'kubectl', 'operator'));

COMMENT ON COLUMN audit_events.source IS
    'the door: rest, kubectl (the apiserver''s audit webhook) or operator';

CREATE INDEX audit_events_source_page_idx
    ON audit_events (source, occurred_at DESC, id DESC);

-- The apiserver may send a batch again: its auditID makes the row once.
CREATE UNIQUE INDEX audit_events_kubernetes_audit_id
    ON audit_events (request_id) WHERE source = 'kubectl';
