"""The Backup and BackupSchedule room: their life cycles, called by ``handlers``.

- ``lifecycle``: a Backup from Pending to Completed or Failed, inline or in a runner Job,
  and its TTL; ``status`` (pure) what it reports at each step;
- ``schedules``: BackupSchedules, their cron and retention;
- ``deletion``: its finalizer, which deletes the artifacts of its attempts;
- ``sweeping``: partial artifacts left by interrupted uploads.

The runner itself (pg_dump, the envelope, storage) is ``dockyard.runner``.
"""
