-- Only the platform's own roles may connect to the platform database. PUBLIC may, by
-- default, in every database: where the platform database shares its server with the
-- environments' databases (the test bed, the development overlay), every environment's
-- role could connect here and hold the advisory locks that the migrations and the
-- event log's appends take. Its owner and superusers keep their access, and
-- `dockyard migrate` grants CONNECT to the runtime role (grant_runtime); any other role
-- that needs this database (monitoring, reporting) is granted CONNECT by hand.
DO $$
BEGIN
    EXECUTE pg_catalog.format(
        'REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', pg_catalog.current_database()
    );
END
$$;
