"""BackupStores over REST: the cluster's storage locations and keys, as kubectl sees them.

A BackupStore is cluster-scoped, so its routes are ``/api/v1/backupstores`` and
``/api/v1/backupstores/{name}``, with the contract of every kind (``kinds.KindRoutes``):
reads from the API's watch cache, writes to the apiserver as the caller, ``ETag`` and
``If-Match``, ``Idempotency-Key`` on POST, and the schema's and CEL rules' messages
(exactly one storage, storage immutable) as problem+json with field paths.

Only a cluster-wide grant opens them: the SubjectAccessReview of a request without a
namespace is answered by ClusterRoleBindings alone, so a tenant whose roles are bound in
its own namespace gets 403 (``dockyard-admin`` holds them; docs/rbac.md). A store names
its key Secrets and storage credentials; it never holds them.
"""

from __future__ import annotations

from dockyard.api import keys
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.kinds import plain_kind
from dockyard.api.routes.models import NewObjectMeta, name_field
from dockyard.core.models.backup_store import BackupStore


class BackupStoreMetaInput(NewObjectMeta):
    """The metadata a client may set on a new backup store."""

    name: str = name_field("unique in the cluster; Backups name it in spec.storeRef")


ROUTES = plain_kind(
    BackupStore,
    BackupStoreMetaInput,
    keys.BACKUP_STORE_CACHE,
    spec="where artifacts go and which keys encrypt them",
    objects="backup stores",
)


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
