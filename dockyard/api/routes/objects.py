"""What the REST routes of every custom resource share, so that all kinds behave alike.

The object as clients see it (without ``managedFields``), ``ETag`` as the object's
resourceVersion and ``If-Match`` back into one, the caller's own token for the calls
made on their behalf, and RFC 7396 JSON merge patch as PATCH applies it before validating.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from dockyard.api import errors, keys
from dockyard.api.auth import bearer_token
from dockyard.core.kube import CallerToken


def public(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as clients see it: without the apiserver's field-manager bookkeeping."""
    shown = dict(obj)
    shown["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
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
    if not value.isdigit():
        raise errors.precondition_failed(f"If-Match {header!r} is not an ETag this API issued.")
    return value


def caller(request: web.Request) -> CallerToken:
    """The credentials of calls made on the caller's behalf: the token they authenticated with.

    The apiserver authenticates it again, so it sees the caller's exact identity (uid,
    groups, extra), and its RBAC, admission and audit log judge the caller, not the API.
    """
    token = bearer_token(request.headers.get("Authorization"))
    if keys.PRINCIPAL not in request or token is None:
        raise errors.unauthorized()  # only authenticated operations call the apiserver
    return CallerToken(token)


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
