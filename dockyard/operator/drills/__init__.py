"""The RestoreDrill room: scheduled restores that prove backups can be restored.

- ``lifecycle``: a drill run from due to Passed or Failed;
- ``plan`` (pure): when a drill is due, what it restores, and its verdict;
- ``checks``: the SQL and row-count checks, run as the tenant;
- ``scratch``: the scratch databases a drill restores into, and their expiry;
- ``verification``: recording a drill's verdict on the Backup it restored;
- ``log``: the bounded run history in status.
"""
