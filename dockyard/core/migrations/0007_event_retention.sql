-- Retention of the event log (migration 0004). The runtime role may only INSERT and
-- SELECT events, so old ones are deleted through this function, which runs with its
-- owner's rights and deletes only what retention may: events older than the shortest
-- retention allowed (7 days) on which no delivery is still pending, together with their
-- finished (delivered or dead) deliveries. Like audit_purge_before (0003): a stolen
-- runtime DSN can at worst purge what retention would purge anyway.
CREATE FUNCTION events_purge_before(cutoff timestamptz, batch integer) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    doomed bigint[];
    deleted integer;
BEGIN
    IF cutoff IS NULL OR cutoff > now() - interval '7 days' THEN
        RAISE EXCEPTION 'events younger than 7 days cannot be purged'
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
