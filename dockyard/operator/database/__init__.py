"""Each environment's own database and login role on the managed PostgreSQL server,
and the databases restores and drills restore into.

The Environment reconciler calls :class:`ManagedPostgres` to make sure an environment's
database and role exist with the password held in its Secret (``ensure``), to ask
whether clients are still at work (``active_connections``) and to remove both
(``drop``); restores and drills create, switch over and drop their own databases with
it. This package owns what those objects are called (``names``), how their passwords
are made (``credentials``) and who may use them: only the environment's role (and the
server's administrators) may connect to its database, and nobody else may create
objects in its ``public`` schema.

- ``names``: database and role names, and the check every name passes before SQL;
- ``credentials``: passwords, SCRAM verifiers, what a workload's Secret holds;
- ``errors``: failures as a condition reason and a message that names no secret;
- ``sessions``: the pinned, short-lived admin and tenant connections;
- ``tenants``: an environment's database and role (ensure, drop);
- ``staging``: restore and drill databases, and a restore's switch-over;
- ``server``: ``ManagedPostgres``, which does both.

Why it looks the way it does:

- Every call opens its own short-lived admin connection. The operator touches this
  server a few times per reconcile, so a pool would only hold backends idle; nothing
  connects at import or construction time.
- Tenants are untrusted (CVE-2018-1058 is the reference). An environment's role owns
  its database, so it can plant functions, views, operators and aggregates there and
  point the database's ``search_path`` at them. The admin therefore only ever connects
  to the maintenance database (the admin DSN's), never into an environment's, with
  ``search_path`` pinned to ``pg_catalog, pg_temp`` in the startup packet (which beats
  any ``ALTER DATABASE/ROLE ... SET``) and every catalog name qualified. What has to
  run inside an environment's database (closing its ``public`` schema) runs logged in
  as the environment's own role (:class:`TenantLogin`).
- An environment's role may connect to its own database only: PUBLIC loses CONNECT on
  each environment database, and on the maintenance database and ``template1`` before
  the first admin statement, where it could otherwise hold another environment's
  advisory lock or plant objects that new databases copy.
- The plaintext password never travels in SQL. ``ensure`` computes the SCRAM-SHA-256
  verifier (``credentials``) and sends that, so statement logs, ``pg_stat_statements`` and error
  messages on the server can at most show a salted hash.
- Identifiers come from ``names`` only, are checked against a strict
  pattern and then quoted, so no caller-supplied text is ever formatted into SQL.
- Failures reach the caller as :class:`ManagedDatabaseError` subclasses whose
  ``reason`` fits a condition and whose ``message`` names no secret.

Requires PostgreSQL 10 or later (SCRAM); ``DROP DATABASE ... WITH (FORCE)`` is used on 13+.
"""

from dockyard.operator.database.credentials import (
    DatabaseCredentials,
    TenantLogin,
    generate_password,
    scram_sha256_verifier,
)
from dockyard.operator.database.errors import (
    DatabaseOperationFailed,
    DatabaseUnavailable,
    ManagedDatabaseError,
    UnavailableReason,
)
from dockyard.operator.database.names import (
    database_identity,
    retired_database_name,
    staging_database_name,
)
from dockyard.operator.database.server import ManagedPostgres

__all__ = [
    "DatabaseCredentials",
    "DatabaseOperationFailed",
    "DatabaseUnavailable",
    "ManagedDatabaseError",
    "ManagedPostgres",
    "TenantLogin",
    "UnavailableReason",
    "database_identity",
    "generate_password",
    "retired_database_name",
    "scram_sha256_verifier",
    "staging_database_name",
]
