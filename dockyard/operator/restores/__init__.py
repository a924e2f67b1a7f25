"""The Restore room: a restore's plan, its approval and its switch-over.

- ``lifecycle``: a Restore from Pending through its plan, AwaitingApproval, the run into
  a staging database and the switch-over, to Completed or Failed;
- ``approval``: who may approve, and whether an approval is still valid (pure).
"""
