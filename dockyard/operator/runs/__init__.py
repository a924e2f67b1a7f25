"""Runs of the backup runner driven by custom resources: Backup now, Restore and
RestoreDrill next.

``dockyard.operator.backups`` is the runner library and knows nothing of custom
resources; this package is the bridge. It owns what every kind that runs the runner
shares:

- ``context``: a spec's storage, encryption key and source database resolved into the
  runner's arguments (storage confined under ``backup_root``, keys read from Secrets and
  never logged), and the bounded-concurrency slots of inline runs;
- ``catalog``: the platform database's ``backup_catalog`` rows;
- ``jobs``: the pure builders of runner Jobs and their least-privilege ServiceAccount;
- ``backups`` and ``schedules``: the Backup and BackupSchedule life cycles, called by
  the thin Kopf handlers in ``dockyard.operator.handlers``;
- ``drills`` (with the pure ``drill_plan``, and ``drill_checks``, ``drill_log``,
  ``scratch``, ``verification``): the RestoreDrill life cycle.
"""
