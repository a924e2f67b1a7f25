-- Platform schema, part 2: the backup catalog and the restore drills' run history.

-- One row per Backup object that completed (or failed), keyed by the object's uid so a
-- Backup deleted and recreated under the same name is a new row. The operator writes
-- a row after the artifact is committed and before the status says Completed, and
-- upserts it again from the status at start-up, so the catalog outlives the objects
-- (retention deletes those) as the history of what was backed up where.
CREATE TABLE backup_catalog (
    uid          uuid PRIMARY KEY,
    namespace    text NOT NULL,
    name         text NOT NULL,
    environment  text NOT NULL,
    phase        text NOT NULL CHECK (phase IN ('Pending', 'Running', 'Completed', 'Failed')),
    location     text,
    size         bigint CHECK (size >= 0),
    sha256       text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    key_id       text,
    manifest     jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at   timestamptz,
    completed_at timestamptz,
    verified_by  text,
    verified_at  timestamptz,
    deleted_at   timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE backup_catalog IS
    'Every backup the operator ran: where its artifact is, its digest, key id and tables';
COMMENT ON COLUMN backup_catalog.manifest IS 'row count per table, {"schema.table": rows}';
COMMENT ON COLUMN backup_catalog.deleted_at IS 'when the Backup and its artifact were deleted';

-- An environment's backups newest first (latest, latestVerified, restore plans), with
-- the same trailing columns for keyset pagination.
CREATE INDEX backup_catalog_environment_idx
    ON backup_catalog (namespace, environment, completed_at DESC, uid);
CREATE INDEX backup_catalog_verified_idx
    ON backup_catalog (namespace, environment, verified_at DESC)
    WHERE verified_at IS NOT NULL;
CREATE INDEX backup_catalog_name_idx ON backup_catalog (namespace, name);

-- One row per restore drill run: which backup, how long the restore took (RTO), how
-- old the backup was (RPO), and the checks that failed.
CREATE TABLE drill_runs (
    id                 bigserial PRIMARY KEY,
    namespace          text NOT NULL,
    drill              text NOT NULL,
    backup             text,
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz,
    restore_seconds    double precision CHECK (restore_seconds >= 0),
    backup_age_seconds double precision CHECK (backup_age_seconds >= 0),
    result             text CHECK (result IN ('Passed', 'Failed')),
    failed_checks      jsonb NOT NULL DEFAULT '[]'::jsonb
);

COMMENT ON TABLE drill_runs IS 'Restore drill runs with their RTO and RPO measurements';

-- A drill's history newest first, keyset-paginated on (started_at, id).
CREATE INDEX drill_runs_drill_idx ON drill_runs (namespace, drill, started_at DESC, id DESC);
CREATE INDEX drill_runs_backup_idx ON drill_runs (namespace, backup);
