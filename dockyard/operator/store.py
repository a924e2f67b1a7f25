"""One store per custom resource kind: read and validate, list, write status, post Events.

Every room of the operator (environments, backups, restores, drills, scaling) reads and
writes its own kind the same way, through a ``KindStore`` of its model:

- **load** reads an object afresh and validates it into its model. An object that is
  gone or being deleted is ``None`` (the finalizer's handler sees it instead). One
  that does not validate (only a CRD older than the operator lets one through: the
  API server validates with the same schema) is reported with one message format,
  ``field.path: problem; ...``, in the way the caller asks (``OnInvalid``).
- **in_namespace** returns the valid objects of a namespace; an invalid one is left out (its
  own handler reports it), and a kind that is not installed has none.
- **write_status** merges a status into the status subresource of one object, named
  by its uid: 404 (deleted meanwhile) is no error, nor is a name that now belongs to
  another object. There is one conflict policy, the last write wins: the
  resourceVersion a write carries only binds it to the object it was read from.
- **post** and **record** publish Kubernetes Events about an object: ``post`` through
  Kopf (inside a handler), ``record`` through the operator's own client (from
  background tasks, where Kopf's poster does not run).

Writes go through ``dockyard.operator.apply``; paths come from the model's resource
type in ``dockyard.core.resources``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Generic, TypeVar, cast

import kopf
from pydantic import BaseModel, ValidationError

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.common import CustomResource
from dockyard.core.resources import EVENTS, Manifest, ResourceType
from dockyard.operator import apply

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=CustomResource)
K = TypeVar("K", bound=Hashable)

# Kubernetes truncates longer Event messages; ours say what matters first.
EVENT_MESSAGE_LIMIT: Final = 1024
# What an invalid object's status message keeps of the problem.
INVALID_MESSAGE_LIMIT: Final = 4096
REPORTING_COMPONENT: Final = "dockyard-operator"


def problem(exc: ValidationError) -> str:
    """A validation error in one line: ``spec.field: what is wrong; ...``."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


class InvalidObject(Exception):
    """An object that does not validate into its model; ``problem`` says why, in one line."""

    def __init__(self, raw: Manifest, exc: ValidationError) -> None:
        self.raw = raw
        self.problem = problem(exc)
        super().__init__(self.problem)


class OnInvalid(StrEnum):
    """What ``KindStore.load`` does with an object that does not validate."""

    RAISE = "Raise"
    """Raise ``InvalidObject``: the caller reports it its own way."""
    FAIL = "Fail"
    """Write phase Failed with the problem as message, post a Warning Event
    ``InvalidSpec``, and return ``None``."""
    SKIP = "Skip"
    """Log a warning and return ``None``."""


@dataclass(frozen=True, slots=True)
class Loaded(Generic[T]):
    """One object a pass acts on: as read (for Events) and as validated."""

    raw: Manifest
    resource: T

    @property
    def namespace(self) -> str:
        return self.resource.metadata.namespace or ""

    @property
    def name(self) -> str:
        return self.resource.metadata.name or ""

    @property
    def uid(self) -> str:
        return self.resource.metadata.uid or ""

    @property
    def generation(self) -> int | None:
        return self.resource.metadata.generation


def replacing(status: BaseModel) -> dict[str, Any]:
    """``status`` as a merge patch's ``status`` that also removes the fields it no longer
    has (a merge patch leaves a field it does not name alone; ``None`` removes it)."""
    body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    for field in type(status).model_fields.values():
        body.setdefault(field.alias or "", None)
    return body


@dataclass
class _Held:
    lock: asyncio.Lock
    users: int = 0
    """Passes that hold the lock or wait for it."""


class ObjectLocks(Generic[K]):
    """One lock per object, so that the passes over one object never interleave, and
    the objects whose pass is already waiting for its lock (``queued``).

    A lock is kept only while a pass holds it or waits for it: events keep coming for an
    object after it is gone (its children's, as the garbage collector deletes them), and
    a lock left for each would be kept for good. Dropping a lock by hand while others
    wait for it would let a later pass take a new one and run beside them.
    """

    def __init__(self) -> None:
        self._locks: dict[K, _Held] = {}
        self.queued: set[K] = set()

    @asynccontextmanager
    async def lock(self, key: K) -> AsyncIterator[None]:
        """Hold the lock that serializes everything the operator does to one object."""
        held = self._locks.get(key)
        if held is None:
            held = self._locks[key] = _Held(asyncio.Lock())
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if not held.users and self._locks.get(key) is held:
                del self._locks[key]

    async def coalesced(self, key: K, work: Callable[[], Awaitable[object]]) -> None:
        """``work`` under the object's lock, for an event; nothing if a pass for an
        earlier event is still waiting for the lock: that one reads everything afresh
        and serves this event too. An event arriving while ``work`` runs queues the next
        pass: ``work`` may have read what the event changed before it changed."""
        if key in self.queued:
            return
        self.queued.add(key)
        entered = False
        try:
            async with self.lock(key):
                entered = True
                self.queued.discard(key)
                await work()
        finally:
            if not entered:  # cancelled while it waited: no pass will serve the mark
                self.queued.discard(key)

    def forget(self, key: K) -> None:
        """Drop what is kept in memory about an object that no longer exists (its lock
        goes by itself once no pass holds it)."""
        self.queued.discard(key)


def deleting(raw: Mapping[str, Any]) -> bool:
    """Whether the object ``raw`` is being deleted (its finalizers are at work)."""
    return bool((raw.get("metadata") or {}).get("deletionTimestamp"))


def valid(model: type[T], items: Iterable[Mapping[str, Any]]) -> list[T]:
    """The items that validate into ``model``; the others are left out (their own handler
    reports them), with a warning."""
    found: list[T] = []
    for item in items:
        try:
            found.append(model.model_validate(item))
        except ValidationError as exc:
            logger.warning(
                "skipping an object that does not parse",
                extra={
                    "kind": item.get("kind"),
                    "object": (item.get("metadata") or {}).get("name"),
                    "error": problem(exc),
                },
            )
    return found


class KindStore(Generic[T]):
    """Reads and writes the objects of one kind, validated into ``model``."""

    def __init__(self, kube: KubeClient, model: type[T]) -> None:
        self.kube = kube
        self.model = model
        self.rtype = ResourceType.of(model)

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        return self.rtype.path(namespace, name, subresource)

    # -- reading ---------------------------------------------------------------------------

    async def read(self, namespace: str, name: str) -> Manifest | None:
        """The object as stored now (being deleted or not), or ``None`` when it is gone."""
        return await apply.get(self.kube, self.path(namespace, name))

    def parse(self, raw: Manifest) -> T:
        """``raw`` validated into the model; ``InvalidObject`` when it does not validate."""
        try:
            return self.model.model_validate(raw)
        except ValidationError as exc:
            raise InvalidObject(raw, exc) from None

    async def load(
        self, namespace: str, name: str, *, on_invalid: OnInvalid = OnInvalid.RAISE
    ) -> Loaded[T] | None:
        """The object, read afresh and validated; ``None`` when it is gone or being
        deleted, or when it is invalid and ``on_invalid`` is not ``RAISE``."""
        raw = await self.read(namespace, name)
        if raw is None or deleting(raw):
            return None
        return await self.loaded(raw, on_invalid=on_invalid)

    async def loaded(
        self, raw: Manifest, *, on_invalid: OnInvalid = OnInvalid.RAISE
    ) -> Loaded[T] | None:
        """``raw`` validated, an invalid one handled as ``on_invalid`` says."""
        try:
            return Loaded(raw, self.parse(raw))
        except InvalidObject as invalid:
            if on_invalid is OnInvalid.RAISE:
                raise
            meta = raw.get("metadata") or {}
            if on_invalid is OnInvalid.FAIL:
                failed = {"phase": "Failed", "message": invalid.problem[:INVALID_MESSAGE_LIMIT]}
                stored = raw.get("status") or {}
                if all(stored.get(key) == value for key, value in failed.items()):
                    return None  # said already: no write, no second Event
                await self.write_status(
                    meta.get("namespace", ""), meta.get("name", ""), failed, uid=meta.get("uid")
                )
                post(raw, reason="InvalidSpec", message=invalid.problem, warning=True)
            else:
                logger.warning(
                    "invalid object skipped",
                    extra={
                        "kind": self.rtype.kind,
                        "object": meta.get("name"),
                        "error": invalid.problem,
                    },
                )
            return None

    async def find(self, namespace: str, name: str) -> T | None:
        """The object validated, or ``None`` when it is gone or does not validate."""
        raw = await self.read(namespace, name)
        return None if raw is None else next(iter(self.valid([raw])), None)

    def valid(self, items: Iterable[Manifest]) -> list[T]:
        """The items that validate; the others are left out, with a warning."""
        return valid(self.model, items)

    async def in_namespace(
        self, namespace: str, *, params: Mapping[str, str] | None = None
    ) -> list[T]:
        """The valid objects of ``namespace`` (none when the kind is not installed)."""
        return self.valid(await self.items(namespace, params=params))

    async def items(
        self, namespace: str, *, params: Mapping[str, str] | None = None
    ) -> list[Manifest]:
        """The objects of ``namespace`` as stored, valid or not."""
        return await apply.items(self.kube, self.rtype, namespace, params=params)

    # -- writing ---------------------------------------------------------------------------

    async def write_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        uid: str | None,
        only_if: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> bool:
        """Merge ``status`` into the status of the object ``uid``; ``False`` when it is
        gone, the name now belongs to another, or ``only_if`` refuses the object as read
        (:func:`apply.patch_status`)."""
        return await apply.patch_status(
            self.kube, self.rtype, namespace, name, status, uid=uid, only_if=only_if
        )

    async def patch(
        self, namespace: str, name: str, body: Mapping[str, Any], *, uid: str | None
    ) -> bool:
        """Merge ``body`` into the object ``uid`` (metadata, spec); ``False`` when it is
        gone or the name now belongs to another."""
        if not uid:
            raise ValueError(f"a patch names its object's uid ({self.rtype.kind} {name})")
        return await apply.merge_patch(self.kube, self.path(namespace, name), body, uid=uid)

    async def create(self, manifest: Manifest) -> bool:
        """Create ``manifest``; ``False`` when one of its name exists already."""
        return await apply.create(self.kube, manifest)

    async def create_object(self, manifest: Manifest) -> Manifest | None:
        """Create ``manifest``: the object as the create answered it (with the uid this call
        made), or ``None`` when one of its name exists already (:func:`apply.create_object`)."""
        return await apply.create_object(self.kube, manifest)

    async def delete(
        self,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> bool:
        """Delete the object (only if its uid is ``uid``, and it is still at
        ``resource_version``, when given); whether this did."""
        path = self.path(namespace, name)
        return await apply.delete(self.kube, path, uid=uid, resource_version=resource_version)

    # -- Events ----------------------------------------------------------------------------

    def post(
        self, raw: Mapping[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None:
        """An Event about ``raw``, sent by Kopf in the background (inside a handler)."""
        post(raw, reason=reason, message=message, warning=warning)

    async def record(
        self,
        raw: Mapping[str, Any],
        *,
        reason: str,
        message: str,
        warning: bool = False,
        now: datetime | None = None,
    ) -> None:
        """An Event about ``raw``, created through the operator's own client.

        For passes that also run outside Kopf's handlers (``kopf.event`` only works inside
        them). An Event that cannot be recorded (a namespace being deleted) is logged, not
        raised: the status already says what the Event would.
        """
        event = event_manifest(
            raw, reason=reason, message=message, warning=warning, now=now or datetime.now(UTC)
        )
        try:
            await apply.create(self.kube, event)
        except KubeError as exc:
            meta = raw.get("metadata") or {}
            logger.warning(
                "could not record an event",
                extra={
                    "namespace": meta.get("namespace"),
                    "object": meta.get("name"),
                    "error": str(exc),
                },
            )


def post(raw: Mapping[str, Any], *, reason: str, message: str, warning: bool = False) -> None:
    """An Event about the object ``raw``, sent by Kopf in the background."""
    kopf.event(
        kopf.Body(cast(kopf.RawBody, dict(raw))),
        type="Warning" if warning else "Normal",
        reason=reason,
        message=message[:EVENT_MESSAGE_LIMIT],
    )


def event_manifest(
    raw: Mapping[str, Any], *, reason: str, message: str, warning: bool, now: datetime
) -> Manifest:
    """A core/v1 Event about ``raw``."""
    meta = raw["metadata"]
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": EVENTS.api_version,
        "kind": EVENTS.kind,
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": raw.get("apiVersion"),
            "kind": raw.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": message[:EVENT_MESSAGE_LIMIT],
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": REPORTING_COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
