"""What every kind that runs the runner shares (Backup, Restore, RestoreDrill).

``dockyard.runner`` knows nothing of custom resources; this package is the bridge:

- ``context``: a spec's storage, encryption key and source database resolved into the
  runner's arguments (storage confined under ``backup_root``, keys read from Secrets and
  never logged);
- ``inline`` (with ``slots``): the runs the operator carries out itself, bounded in
  number and time, and cancelled when their object goes;
- ``s3_access``: S3 credentials and the endpoint guard;
- ``catalog``: the platform database's ``backup_catalog`` rows;
- ``jobs`` (pure) and ``runner_jobs``: runner Jobs and their least-privilege
  ServiceAccount;
- ``restoring``: restoring a Backup into a fresh database, shared by restores and drills.
"""
