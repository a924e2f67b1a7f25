"""The Restore room: a restore's plan, its approval, its run and its switch-over.

- ``lifecycle``: ``RestoreRuns.drive``, a Restore from Pending to Completed or Failed,
  one stage per pass;
- ``planning``: the plan, and the approval written to status;
- ``approval``: who may approve, and whether an approval is still valid;
- ``safety``: the safety Backup of the target, taken first;
- ``running``: an attempt, inline or in a runner Job, up to its row counts;
- ``switch_over``: the switch-over, and the recovery of an interrupted attempt;
- ``records``: reading Restores, writing their status, and the ends of an attempt;
- ``leftovers``: the restore's databases that nothing uses any more, dropped.
"""
