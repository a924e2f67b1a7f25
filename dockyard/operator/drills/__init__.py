"""The RestoreDrill room: scheduled restores that prove backups can be restored.

- ``lifecycle``: one pass over a drill, from due to a run started, followed or recovered;
- ``running``: a run, inline in a task or in a runner Job, up to its verdict;
- ``records``: reading drills, writing their status, and what a finished run leaves;
- ``plan`` (pure): when a drill is due and which backup it restores;
- ``judging`` (pure): a run's failed checks, its record and the Passing condition;
- ``checks``: the SQL and row-count checks, run as the tenant;
- ``scratch``: the scratch databases a drill restores into, their names and expiry;
- ``verification``: recording a drill's verdict on the Backup it restored;
- ``log``: the run log in the platform database.
"""
