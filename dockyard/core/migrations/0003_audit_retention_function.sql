-- The audit trail is append-only for the API: its runtime role gets INSERT and SELECT on
-- audit_events, never DELETE or TRUNCATE (dockyard migrate grants it, see
-- dockyard/core/migrations.py grant_runtime). Retention still has to delete old rows;
-- it does so through this function, which runs with its owner's rights (the migration
-- role) and deletes only rows older than the shortest retention allowed, 30 days. A
-- stolen runtime DSN can then at worst purge what retention would purge anyway.
CREATE FUNCTION audit_purge_before(cutoff timestamptz, batch integer) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deleted integer;
BEGIN
    IF cutoff IS NULL OR cutoff > now() - interval '30 days' THEN
        RAISE EXCEPTION 'audit events younger than 30 days cannot be purged'
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
