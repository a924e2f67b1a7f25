"""What a kind's routes are called and how their operations are declared.

``KindContract`` names a kind from its custom resource model (``Backup``: the plural
``backups``, ``Backups`` in operation ids, "backup" in summaries) and builds its
``Operation``s: tagged with the plural and needing an RBAC verb on it. ``KindRoutes``
(``kinds``) adds the handlers those operations serve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel

from dockyard.api.auth import Permission
from dockyard.api.openapi import Handler, Operation
from dockyard.api.routes.models import spec_model
from dockyard.core.models.common import CustomResource
from dockyard.core.resources import ResourceType, resource_type

COMMON_RESPONSES = {401: "No valid bearer token", 403: "Not allowed", 422: "Invalid request"}


# Kinds whose reads the audit trail records (Operation.sensitive): a Webhook's URL may
# carry a token, a BackupStore names the cluster's storage and key Secrets, and a
# Backup's manifest and a Restore's plan hold the tables of a tenant's database and
# their sizes (as getRestorePlan does: a read of the Restore served the same plan).
SENSITIVE_KINDS: Final = frozenset({"webhooks", "backupstores", "backups", "restores"})


@dataclass(frozen=True)
class KindContract:
    """A kind's names and operation builders; ``model`` is its custom resource."""

    model: type[CustomResource]

    @property
    def plural(self) -> str:
        return self.model.crd.plural

    @property
    def kind(self) -> str:
        return self.model.crd.kind

    @property
    def spec_model(self) -> type[BaseModel]:
        return spec_model(self.model)

    @property
    def plural_title(self) -> str:
        """The plural spelt with the kind's capitals (``ScalingPolicies``), for operation ids."""
        # backups from Backup; scalingpolicies from ScalingPolic(y).
        stem = self.kind if self.plural.startswith(self.kind.lower()) else self.kind[:-1]
        return stem + self.plural[len(stem) :]

    @property
    def noun(self) -> str:
        """The kind in words (``scaling policy``), for summaries and messages."""
        return re.sub(r"(?<!^)(?=[A-Z])", " ", self.kind).lower()

    @property
    def cluster_scoped(self) -> bool:
        """Whether the kind's objects belong to the cluster rather than to a namespace."""
        return self.model.crd.scope == "Cluster"

    @property
    def collection_path(self) -> str:
        """The REST path of the kind's objects: ``/api/v1/<plural>`` for a cluster-scoped
        kind, ``/api/v1/namespaces/{namespace}/<plural>`` for the others."""
        if self.cluster_scoped:
            return f"/api/v1/{self.plural}"
        return f"/api/v1/namespaces/{{namespace}}/{self.plural}"

    @property
    def resource(self) -> ResourceType:
        return resource_type(self.model.crd.api_version, self.kind)

    def operation(
        self,
        method: str,
        path: str,
        operation_id: str,
        summary: str,
        handler: Handler,
        verb: str,
        **details: Any,
    ) -> Operation:
        """An operation of this kind: tagged with its plural, needing ``verb`` on it; a
        read of a ``SENSITIVE_KINDS`` kind is ``sensitive``."""
        details.setdefault("responses", COMMON_RESPONSES)
        details.setdefault("sensitive", method.upper() == "GET" and self.plural in SENSITIVE_KINDS)
        return Operation(
            method,
            path,
            operation_id,
            summary,
            self.plural,
            handler,
            permission=Permission(verb, self.plural),
            **details,
        )

    def object_operation(
        self,
        method: str,
        action: str,
        operation_id: str,
        summary: str,
        handler: Handler,
        verb: str,
        *,
        responses: dict[int, str] | None = None,
        **details: Any,
    ) -> Operation:
        """An operation at ``.../<plural>/{name}/<action>``; it may answer 404 as well as
        ``responses`` and the ones every operation may."""
        path = f"{self.collection_path}/{{name}}/{action}"
        answers = {**COMMON_RESPONSES, 404: f"No such {self.noun}", **(responses or {})}
        return self.operation(
            method, path, operation_id, summary, handler, verb, responses=answers, **details
        )


__all__ = ["COMMON_RESPONSES", "KindContract"]
