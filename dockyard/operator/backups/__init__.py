"""The Backup and BackupSchedule room: their life cycles, called by ``handlers``.

- ``lifecycle``: a Backup from Pending to Completed or Failed, inline or in a runner Job,
  its TTL and its finalizer;
- ``schedules``: BackupSchedules, their cron and retention;
- ``deletion``: what a Backup's deletion does to its artifact;
- ``sweeping``: partial artifacts left by interrupted uploads.

The runner itself (pg_dump, the envelope, storage) is ``dockyard.runner``.
"""
