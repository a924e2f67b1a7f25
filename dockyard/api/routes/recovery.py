"""What the REST routes of the backup and restore kinds share, on top of ``kinds.KindRoutes``.

Backups, BackupSchedules, Restores and RestoreDrills get the five operations every kind
gets (``kinds``), plus:

- lists paged with a cursor (``limit``, ``cursor``) and filtered by ``environment``,
  ``phase`` (for kinds with one) and ``labelSelector``, since a namespace accumulates
  backups and restores by the hundred;
- annotations that only the server writes (``dockyard.io/requested-by`` and
  ``dockyard.io/approved-by`` on a Restore): a client sending one, on create or in a
  patch, gets a 422 naming it, because those annotations are the approval rule's
  evidence and must come from the authenticated caller, never from a body;
- annotations the server stamps on create (the requester);
- ``POST .../{name}/run`` for the scheduled kinds: sets ``dockyard.io/run-now`` with a
  merge patch made as the caller, so it needs (and is authorized as) ``patch``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from dockyard.api import cursors, errors, keys
from dockyard.api.openapi import Operation, replace
from dockyard.api.paths import DNS_SUBDOMAIN
from dockyard.api.routes.kinds import KindRoutes, with_traceparent
from dockyard.api.routes.models import NewObjectMeta, name_field
from dockyard.api.routes.objects import caller, metadata_diff, respond
from dockyard.api.routes.pages import (
    LabelSelector,
    Predicate,
    label_filter,
    page,
    page_cursor,
    page_size,
    parse_query,
    query_parameter,
    query_parameters,
)
from dockyard.core.models.scheduling import RUN_NOW_ANNOTATION

Object = dict[str, Any]
# Annotations a server stamps on create, computed from the request (its caller).
Stamp = Callable[[web.Request], Mapping[str, str]]

LIMIT_DEFAULT = 50
LIMIT_MAX = 500
# A cursor is the base64 of an object name (at most 253 characters).
CURSOR_MAX_LENGTH = 400


class MetadataInput(NewObjectMeta):
    """The metadata a client may set on a new backup, schedule, restore or drill."""

    name: str = name_field("DNS-1123 subdomain, unique in the namespace")
    annotations: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Kubernetes annotations (not those the server sets, such as "
        "dockyard.io/requested-by)",
    )


class PageQuery(BaseModel):
    """Query parameters of the paged lists."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    limit: int = page_size(LIMIT_DEFAULT, LIMIT_MAX)
    cursor: str | None = page_cursor(CURSOR_MAX_LENGTH)
    label_selector: LabelSelector = None
    environment: str | None = Field(
        default=None,
        max_length=DNS_SUBDOMAIN.max_length,
        pattern=DNS_SUBDOMAIN.pattern,
        description="only objects about this Environment",
    )
    phase: str | None = Field(default=None, max_length=32, description="only objects in this phase")


def environment_ref(obj: Object) -> frozenset[str]:
    """The Environment a Backup, BackupSchedule or RestoreDrill is about."""
    name = ((obj.get("spec") or {}).get("environmentRef") or {}).get("name")
    return frozenset({name}) if isinstance(name, str) else frozenset()


def _phase(obj: Object) -> str | None:
    phase = (obj.get("status") or {}).get("phase")
    return phase if isinstance(phase, str) else None


@dataclass(frozen=True)
class RecoveryKindRoutes(KindRoutes):
    """``KindRoutes`` with paged, filtered lists, server-owned annotations and run-now.

    ``environments_of`` says which Environments an object is about (the ``environment``
    filter); ``phases`` is the kind's phase enum, when it has one (the ``phase`` filter);
    ``server_annotations`` are refused from clients (and kept when a patch removes every
    annotation); ``stamp`` adds annotations on
    create; ``runnable`` adds ``POST .../{name}/run``.
    """

    environments_of: Callable[[Object], frozenset[str]] = environment_ref
    phases: type[StrEnum] | None = None
    server_annotations: frozenset[str] = frozenset()
    stamp: Stamp | None = None
    runnable: bool = False

    # -- handlers -------------------------------------------------------------------------

    async def list_namespaced(self, request: web.Request) -> web.Response:
        query = self._page_query(request)
        predicates = self._predicates(query)
        after = cursors.read_name(query.cursor) if query.cursor else None
        cache = await self.synced(request)
        matched = cache.list(
            namespaces={request.match_info["namespace"]},
            predicate=lambda o: (
                (after is None or o["metadata"]["name"] > after) and all(p(o) for p in predicates)
            ),
        )
        shown = matched[: query.limit]
        more = len(matched) > query.limit
        last = cursors.encode_name(shown[-1]["metadata"]["name"]) if more else None
        return page(shown, last, cache.resource_version)

    async def _create(self, request: web.Request, raw: object) -> Object:
        sent = raw.get("metadata") if isinstance(raw, dict) else None
        if self.stamp is not None and isinstance(raw, dict) and isinstance(sent, dict):
            metadata = dict(sent)
            annotations = metadata.get("annotations")
            if isinstance(annotations, dict) or annotations is None:
                metadata["annotations"] = {**(annotations or {}), **self.stamp(request)}
            raw = {**raw, "metadata": metadata}
        return await super()._create(request, raw)

    async def run_now(self, request: web.Request) -> web.Response:
        """Set the run-now annotation; the operator starts a run and removes it."""
        current = await self.cached(request)
        requested = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        updated = await request.app[keys.KUBE].merge_patch(
            self.resource.path(request.match_info["namespace"], request.match_info["name"]),
            {"metadata": with_traceparent({"annotations": {RUN_NOW_ANNOTATION: requested}})},
            as_caller=caller(request),
        )
        # The caller set this one annotation and nothing else: labels or annotations that
        # differ between the cache and the answer are someone else's, written just before.
        before = (current.get("metadata") or {}).get("annotations") or {}
        earlier = {k: v for k, v in before.items() if k == RUN_NOW_ANNOTATION}
        request[keys.AUDIT] = metadata_diff(
            {"metadata": {"annotations": earlier}},
            {"metadata": {"annotations": {RUN_NOW_ANNOTATION: requested}}},
        )
        await request.app[self.cache].caught_up(updated)
        return respond(updated, status=202)

    # -- helpers --------------------------------------------------------------------------

    def _page_query(self, request: web.Request) -> PageQuery:
        query = parse_query(request, PageQuery)
        if query.phase is not None:
            allowed = [p.value for p in self.phases] if self.phases is not None else []
            if query.phase not in allowed:
                message = (
                    f"must be one of {', '.join(allowed)}"
                    if allowed
                    else f"{self.kind} has no phase to filter on"
                )
                raise errors.validation_failed(
                    [errors.FieldError(field="query.phase", message=message)]
                )
        return query

    def _predicates(self, query: PageQuery) -> list[Predicate]:
        predicates: list[Predicate] = []
        if query.label_selector:
            predicates.append(label_filter(query.label_selector))
        if query.environment:
            environment = query.environment
            predicates.append(lambda o: environment in self.environments_of(o))
        if query.phase:
            phase = query.phase
            predicates.append(lambda o: _phase(o) == phase)
        return predicates

    def refused_annotation(self, key: str) -> str | None:
        if key in self.server_annotations:
            return "set by the server from the authenticated caller; do not send it"
        return super().refused_annotation(key)

    # -- the contract ---------------------------------------------------------------------

    def operations(self) -> list[Operation]:
        operations = replace(
            super().operations(),
            self.list_namespaced,
            description="Paged by name: pass nextCursor back as cursor.",
            parameters=self._list_parameters(),
        )
        if self.runnable:
            operations.append(
                self.object_operation(
                    "POST",
                    "run",
                    f"run{self.kind}",
                    f"Run a {self.noun} now",
                    self.run_now,
                    "patch",
                    response_model=self.model,
                    responses={202: "Run requested"},
                    description=f"Sets the {RUN_NOW_ANNOTATION} annotation; the operator "
                    "starts a run outside the schedule (even while suspended) and removes it.",
                )
            )
        return operations

    def _list_parameters(self) -> tuple[dict[str, Any], ...]:
        parameters = [p for p in query_parameters(PageQuery) if p["name"] != "phase"]
        if self.phases is not None:
            phases = {"type": "string", "enum": [p.value for p in self.phases]}
            parameters.append(query_parameter("phase", phases, "only objects in this phase"))
        return tuple(parameters)


__all__ = [
    "MetadataInput",
    "PageQuery",
    "RecoveryKindRoutes",
    "environment_ref",
]
