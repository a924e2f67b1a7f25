"""Build-time tooling for the API contract: compatibility checks and release snapshots.

Not imported by the running API: ``dockyard openapi`` and CI use it.
"""
