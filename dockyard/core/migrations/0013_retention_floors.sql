-- The retention functions (0003, 0007) refused only a cutoff younger than the shortest
-- retention allowed (30 days of audit events, 7 of events): a stolen runtime DSN could
-- still purge the audit rows 31 to 89 days old that the default 90-day retention keeps.
-- Each now refuses a cutoff younger than the retention configured, which `dockyard
-- migrate` writes into retention_floors as the owner from DOCKYARD_AUDIT_RETENTION_DAYS
-- and DOCKYARD_EVENT_RETENTION_DAYS (grant_runtime lets the runtime role only read it).
-- Until migrate writes them, the floors are the shortest retentions allowed, as before.
CREATE TABLE retention_floors (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    audit_days integer NOT NULL CHECK (audit_days BETWEEN 30 AND 3650),
    event_days integer NOT NULL CHECK (event_days BETWEEN 7 AND 3650),
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO retention_floors (audit_days, event_days) VALUES (30, 7);

-- The API computes its cutoff with the database's now(), in an earlier statement: the
-- floor holds exactly.
CREATE OR REPLACE FUNCTION audit_purge_before(cutoff timestamptz, batch integer)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    floor_days integer;
    deleted integer;
BEGIN
    SELECT greatest(coalesce(max(audit_days), 30), 30) INTO floor_days
    FROM public.retention_floors;
    IF cutoff IS NULL OR cutoff > now() - make_interval(days => floor_days) THEN
        RAISE EXCEPTION 'audit events younger than % days cannot be purged', floor_days
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM public.audit_events
    WHERE id IN (
        SELECT id FROM public.audit_events
        WHERE occurred_at < cutoff
        LIMIT least(greatest(batch, 1), 100000)
    );
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END;
$$;

REVOKE ALL ON FUNCTION audit_purge_before(timestamptz, integer) FROM PUBLIC;

-- The operator computes its cutoff by its own clock: an hour's grace keeps a clock a
-- little ahead of the database's from having every purge refused.
CREATE OR REPLACE FUNCTION events_purge_before(cutoff timestamptz, batch integer)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    floor_days integer;
    doomed bigint[];
    deleted integer;
BEGIN
    SELECT greatest(coalesce(max(event_days), 7), 7) INTO floor_days
    FROM public.retention_floors;
    IF cutoff IS NULL
        OR cutoff > now() - make_interval(days => floor_days) + interval '1 hour' THEN
        RAISE EXCEPTION 'events younger than % days cannot be purged', floor_days
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT array_agg(seq) INTO doomed FROM (
        SELECT e.seq FROM public.events e
        WHERE e.occurred_at < cutoff
          AND NOT EXISTS (
              SELECT 1 FROM public.webhook_deliveries d
              WHERE d.event_seq = e.seq AND d.state = 'pending'
          )
        ORDER BY e.seq
        LIMIT least(greatest(batch, 1), 100000)
    ) old;
    IF doomed IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM public.webhook_deliveries WHERE event_seq = ANY (doomed);
    DELETE FROM public.events WHERE seq = ANY (doomed);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END;
$$;

REVOKE ALL ON FUNCTION events_purge_before(timestamptz, integer) FROM PUBLIC;
