"""What the REST routes of every custom resource share, so that all kinds behave alike.

The object as clients see it (without ``managedFields``), ``ETag`` as the object's
resourceVersion and ``If-Match`` back into one, the caller's own token for the calls
made on their behalf, RFC 7396 JSON merge patch as PATCH applies it before validating,
and ``Idempotency-Key`` around a create (``idempotent``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dockyard.api import errors, keys
from dockyard.api.audit.diff import spec_diff
from dockyard.api.auth import Principal, bearer_token
from dockyard.api.bodies import read_json
from dockyard.api.idempotency import Replay, request_hash, validate_key
from dockyard.core import telemetry
from dockyard.core.kube import CallerToken
from dockyard.core.models.common import OPERATOR_ANNOTATIONS

# What a JSON merge patch may change: the spec, and labels and annotations.
PATCHABLE = frozenset({"spec", "metadata"})
PATCHABLE_METADATA = frozenset({"labels", "annotations"})
MERGE_PATCH_TYPES = frozenset({"application/merge-patch+json", "application/json"})
OPERATOR_BOOKKEEPING = f"{OPERATOR_ANNOTATIONS}/"
# A resourceVersion is a decimal uint64: 18446744073709551615 has 20 digits.
RESOURCE_VERSION_DIGITS = 20


def public(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as clients see it: without the apiserver's field-manager bookkeeping
    (``managedFields``) nor the operator's (Kopf's progress and last-handled records,
    annotations under ``operator.dockyard.io/``)."""
    shown = dict(obj)
    metadata = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
    annotations = metadata.get("annotations")
    if annotations:
        metadata["annotations"] = {
            k: v for k, v in annotations.items() if not k.startswith(OPERATOR_BOOKKEEPING)
        }
    shown["metadata"] = metadata
    return shown


def etag(obj: dict[str, Any]) -> str:
    return f'"{obj["metadata"]["resourceVersion"]}"'


def respond(obj: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(public(obj), status=status, headers={"ETag": etag(obj)})


def if_match(request: web.Request) -> str | None:
    """The resourceVersion an If-Match names; None when absent or ``*``."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    value = header.split(",")[0].strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not _resource_version(value):
        raise errors.precondition_failed(f"If-Match {header!r} is not an ETag this API issued.")
    return value


def _resource_version(value: str) -> bool:
    """Whether ``value`` can be a resourceVersion the apiserver issued: a positive decimal
    uint64 ("0" never matches). ASCII digits only, and their count checked before ``int``
    reads them: ``str.isdigit`` also takes "²", which ``int`` refuses, and ``int`` refuses
    more than 4,300 digits."""
    return (
        value.isascii()
        and value.isdigit()
        and len(value) <= RESOURCE_VERSION_DIGITS
        and 0 < int(value) < 2**64
    )


def caller(request: web.Request) -> CallerToken:
    """The credentials of calls made on the caller's behalf: the token they authenticated with.

    The apiserver authenticates it again, so it sees the caller's exact identity (uid,
    groups, extra), and its RBAC, admission and audit log judge the caller, not the API.
    """
    token = bearer_token(request.headers.get("Authorization"))
    if keys.PRINCIPAL not in request or token is None:
        raise errors.unauthorized()  # only authenticated operations call the apiserver
    sink = request.app[keys.SETTINGS].audit_sink_token
    return CallerToken(
        token,
        username=request[keys.PRINCIPAL].user,
        audit_secret=sink.get_secret_value() if sink is not None else None,
    )


def merge(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def patch_problems(raw: dict[str, Any]) -> list[errors.InvalidField]:
    """The parts of a merge patch this API does not let clients change (as tuples: a patch
    can hold 100,000 unknown keys, of which a problem lists only the first few)."""
    problems = [
        errors.InvalidField(k, "cannot be changed through this API")
        for k in raw
        if k not in PATCHABLE
    ]
    if "spec" in raw and not isinstance(raw["spec"], dict):
        problems.append(errors.InvalidField("spec", "must be an object"))
    metadata = raw.get("metadata")
    if metadata is None:
        return problems
    if not isinstance(metadata, dict):
        problems.append(errors.InvalidField("metadata", "must be an object"))
        return problems
    for key, value in metadata.items():
        if key not in PATCHABLE_METADATA:
            problems.append(errors.InvalidField(f"metadata.{key}", "cannot be changed"))
        elif value is not None and not (
            isinstance(value, dict) and all(isinstance(v, str | None) for v in value.values())
        ):
            problems.append(
                errors.InvalidField(
                    f"metadata.{key}", "must be an object of strings (null removes one)"
                )
            )
    return problems


async def read_merge_patch(request: web.Request) -> dict[str, Any]:
    """The body of a PATCH: a JSON merge patch of what clients may change; 422 otherwise."""
    raw = await read_json(request, allowed=MERGE_PATCH_TYPES)
    if not isinstance(raw, dict):
        raise errors.validation_failed(
            [errors.FieldError(field="(body)", message="a JSON merge patch must be an object")]
        )
    problems = patch_problems(raw)
    if problems:
        raise errors.validation_failed(problems)
    return raw


def idempotency_actor(principal: Principal) -> str:
    """Whose keys a request's are: the user name and, where the apiserver gives one, the
    uid. A ServiceAccount's user name is its namespace and name, which another account
    has once both are made again (a namespace's name given to another team, say)."""
    return principal.user if not principal.uid else json.dumps([principal.user, principal.uid])


async def idempotent(
    request: web.Request, body: object, create: Callable[[], Awaitable[dict[str, Any]]]
) -> web.Response:
    """Answer a POST that creates an object (``create``), honouring ``Idempotency-Key``.

    With a key, the first request claims it and stores its 201; a retry of the same
    request (same caller, path and ``body``) gets that answer again, marked
    ``Idempotency-Replayed``. Only a success is stored: a failure, whatever it is,
    releases the key so the retry runs again (``dockyard.api.idempotency``).
    """
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return respond(await create(), status=201)
    store = request.app[keys.IDEMPOTENCY]
    actor = idempotency_actor(request[keys.PRINCIPAL])
    claimed = await store.claim(
        actor=actor,
        key=validate_key(key),
        method="POST",
        path=request.path,
        digest=request_hash("POST", request.path, body),
    )
    if isinstance(claimed, Replay):
        # The object the first request created: the replay's audit row names it too.
        request[keys.AUDIT_NAME] = claimed.body["metadata"]["name"]
        return web.json_response(
            claimed.body, status=claimed.status, headers={"Idempotency-Replayed": "true"}
        )
    try:
        created = await create()
        await store.complete(claimed, status=201, body=public(created))
    except BaseException:
        await store.release(claimed)
        raise
    return respond(created, status=201)


def metadata_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The audit diff of a change to an object's labels and annotations, under
    ``/metadata/labels/...`` and ``/metadata/annotations/...``, with ``spec_diff``'s
    redaction of secret-looking keys.

    Annotations steer the operator (``dockyard.io/skip-reconcile``, the default backups
    and drill), so a change to them alone is a change. Left out: the request's own
    ``dockyard.io/traceparent``, which is where the trace goes, not a change anyone asked
    for (the row has the trace id already), and the operator's bookkeeping, which clients
    neither see nor write.
    """

    def shown(obj: dict[str, Any]) -> dict[str, Any]:
        metadata = obj.get("metadata") or {}
        annotations = {
            key: value
            for key, value in (metadata.get("annotations") or {}).items()
            if key != telemetry.TRACEPARENT_ANNOTATION and not key.startswith(OPERATOR_BOOKKEEPING)
        }
        labels = dict(metadata.get("labels") or {})
        return {"metadata": {"labels": labels, "annotations": annotations}}

    return spec_diff(shown(before), shown(after))
