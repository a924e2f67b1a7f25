"""The managed PostgreSQL server as the operator uses it: one class, ``ManagedPostgres``.

Its environments' databases and roles (``tenants``) and the databases restores and
drills restore into (``staging``) are two sets of calls on one server, through the
same short-lived, pinned admin sessions (``sessions``).
"""

from __future__ import annotations

from dockyard.operator.database.staging import StagingDatabases
from dockyard.operator.database.tenants import EnvironmentDatabases


class ManagedPostgres(EnvironmentDatabases, StagingDatabases):
    """The managed PostgreSQL server, seen through its admin DSN.

    Nothing connects when it is made; every call opens its own admin connection.
    """
