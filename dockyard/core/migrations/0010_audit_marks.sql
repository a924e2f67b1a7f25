-- Each Audit-ID mark the API mints (dockyard.core.audit_ids) vouches for one audit event:
-- the first the sink sees carrying it. Another event with the same mark is a client who
-- read it (from an apiserver audit log) and sent it with a write of their own, and is
-- recorded as theirs; the same event sent again (a batch the apiserver retries) has the
-- same event_key and is still the API's. A mark is only good for 60 s after it was
-- minted, so its row is kept for a day, then purged by audit retention through
-- audit_marks_purge. The runtime role may insert and read marks, never update or
-- delete one: a stolen runtime DSN cannot make a spent mark good again.
CREATE TABLE audit_marks (
    mark text PRIMARY KEY,
    event_key text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_marks_seen_at_idx ON audit_marks (seen_at);

-- One statement, so plain SQL: the day-old marks that no other purge has locked, at most
-- batch of them; how many went.
CREATE FUNCTION audit_marks_purge(batch integer) RETURNS integer
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH gone AS (
        DELETE FROM public.audit_marks
        WHERE mark IN (
            SELECT mark FROM public.audit_marks
            WHERE seen_at < now() - interval '1 day'
            LIMIT least(greatest(batch, 1), 100000)
            FOR UPDATE SKIP LOCKED
        )
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone;
$$;

REVOKE ALL ON FUNCTION audit_marks_purge(integer) FROM PUBLIC;
