"""The request id, problem+json for every error, and authentication with authorization.

The pipeline, outermost first, as ``app.create_app`` lists it: ``request_context`` (the
request id), tracing and metrics (``telemetry``), ``problems`` (every error rendered as
problem+json), transport security and CORS (``transport``), path parameters checked as
Kubernetes names (``paths``), the rate limiter (``ratelimit.middleware``), the audit
trail (``audit.middleware``), then ``authenticate_and_authorize`` (TokenReview and
SubjectAccessReview), and the handler. What authentication and the handler raise passes
the audit trail on its way out (recorded, then raised again) before ``problems``
renders it.
"""

from __future__ import annotations

import logging
import re
import uuid

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError

from dockyard.api import errors, keys
from dockyard.api.auth import bearer_token
from dockyard.api.transport import client_ip
from dockyard.core import logs
from dockyard.core.breakers import Dependency, DependencyUnavailable
from dockyard.core.kube import KubeError

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id (the caller's, when it is sane) and echo it on the response."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    request[keys.REQUEST_ID] = request_id
    token = logs.request_id_var.set(request_id)
    try:
        return await handler(request)
    finally:
        logs.request_id_var.reset(token)


async def add_request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response, streamed or not, carries the request id."""
    request_id = request.get(keys.REQUEST_ID)
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id


async def add_staleness_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Mark an answer read from a watch cache as stale while the apiserver is unreachable.

    Unreachable: its breaker is open, or the latest readiness check found it down. The
    answer then carries ``Warning: 110`` (RFC 9111's "Response is Stale") and ``Age``,
    the seconds since the apiserver last confirmed the cache.
    """
    cache = request.get(keys.READ_FROM)
    if cache is None or response.status >= 400:
        return
    if not apiserver_unreachable(request.app):
        return
    response.headers["Warning"] = (
        '110 dockyard "Response is Stale: the Kubernetes API is unreachable; '
        'served from the watch cache"'
    )
    response.headers["Age"] = str(int(cache.age()))


def apiserver_unreachable(app: web.Application) -> bool:
    """Whether the apiserver's breaker is open or the last readiness check found it down."""
    if app[keys.BREAKERS].is_open(Dependency.KUBERNETES):
        return True
    answer = app[keys.READINESS].last()
    if answer is None:
        return False
    return any(check.name == "kubernetes" and not check.ready for check in answer.checks)


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render whatever went wrong as problem+json; nothing internal reaches the client."""
    try:
        return await handler(request)
    except errors.Problem as problem:
        return errors.render(problem, request, request.get(keys.REQUEST_ID))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return errors.render(
            _from_http_exception(exc, request), request, request.get(keys.REQUEST_ID)
        )
    except ValidationError as exc:
        return errors.render(
            errors.from_validation_error(exc), request, request.get(keys.REQUEST_ID)
        )
    except KubeError as exc:
        return errors.render(from_kube_error(exc), request, request.get(keys.REQUEST_ID))
    except DependencyUnavailable as exc:
        # A call past its deadline, a failed connection, or an open breaker: 503 at once,
        # with the breaker's own idea of when to come back.
        logger.warning(
            "dependency unavailable",
            extra={"dependency": exc.dependency.value, "reason": exc.reason},
        )
        unavailable = errors.dependency_unavailable(exc.dependency.value, exc.retry_after)
        return errors.render(unavailable, request, request.get(keys.REQUEST_ID))
    except (
        asyncpg.PostgresConnectionError,
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
        asyncpg.TooManyConnectionsError,
        ConnectionRefusedError,
    ) as exc:
        # The Kubernetes client's failures are mapped where it is called, and Redis's
        # just below: a connection failure that reaches here unmapped is the database's.
        logger.warning("dependency unavailable", extra={"error": type(exc).__name__})
        return errors.render(
            errors.dependency_unavailable("postgres"), request, request.get(keys.REQUEST_ID)
        )
    except RedisConnectionError:
        return errors.render(
            errors.dependency_unavailable("redis"), request, request.get(keys.REQUEST_ID)
        )
    except Exception:
        logger.exception("unhandled error", extra={"path": request.path})
        return errors.render(errors.internal_error(), request, request.get(keys.REQUEST_ID))


def _from_http_exception(exc: web.HTTPException, request: web.Request) -> errors.Problem:
    if exc.status == 404:
        return errors.not_found(f"No route matches {request.path}.")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return errors.method_not_allowed(exc.method, exc.allowed_methods)
    if exc.status == 413:
        limit = request.app[keys.SETTINGS].max_body_bytes
        return errors.payload_too_large(limit)
    if exc.status == 415:
        return errors.unsupported_media_type(request.content_type)
    return errors.HTTP_ERROR(exc.reason, status=exc.status, title=exc.reason)


def from_kube_error(exc: KubeError) -> errors.Problem:
    """Map the apiserver's Status to a problem, keeping its field causes (CEL included)."""
    details = exc.body.get("details") or {}
    causes = details.get("causes") or []
    if exc.status == 422 or exc.reason == "Invalid":
        field_errors = [
            errors.FieldError(
                field=str(c.get("field") or "(body)"),
                message=str(c.get("message") or c.get("reason") or "invalid"),
            )
            for c in causes
        ] or [errors.FieldError(field="(body)", message=exc.message)]
        return errors.validation_failed(field_errors)
    if exc.status == 404:
        return errors.not_found(exc.message or "No such resource.")
    if exc.status == 409:
        return errors.conflict(exc.message or "The object was changed; re-read and retry.")
    if exc.status == 403:
        return errors.forbidden(exc.message or "Forbidden.")
    if exc.status == 401:
        return errors.unauthorized()
    if exc.status == 429:
        return errors.too_many_requests(1, "The Kubernetes API is throttling; retry shortly.")
    if exc.status >= 500:
        return errors.dependency_unavailable("kubernetes")
    return errors.KUBERNETES_ERROR(
        exc.message or "The Kubernetes API refused the request.",
        status=exc.status,
        title=exc.reason or "Bad Request",
    )


@web.middleware
async def authenticate_and_authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
    """TokenReview, then SubjectAccessReview, for every operation that is not public."""
    operation = request.app[keys.OPERATIONS].get(request.match_info.route.name or "")
    if operation is None or not operation.authenticated:
        return await handler(request)
    request[keys.OPERATION] = operation
    source = client_ip(request, request.app[keys.SETTINGS].trusted_proxies) or "-"
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        logs.security_event(logger, "authn.missing", path=request.path, source_ip=source)
        raise errors.unauthorized()
    authenticator = request.app[keys.AUTHENTICATOR]
    reviews = request.app.get(keys.REVIEW_CAP)
    if reviews is not None and not await authenticator.knows(token, request):
        await reviews.admit(source)  # 429 when this address has had its reviews
    try:
        # The rate limiter may have reviewed it for this request already: not again.
        principal = await authenticator.authenticate(token, request)
    except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("token review failed", extra={"error": type(exc).__name__})
        raise errors.dependency_unavailable("kubernetes") from None
    if principal is None:
        logs.security_event(logger, "authn.failed", path=request.path, source_ip=source)
        raise errors.unauthorized("The bearer token is invalid or has expired.")
    request[keys.PRINCIPAL] = principal
    permission = operation.permission
    if permission is not None:
        namespace = request.match_info.get("namespace")
        name = request.match_info.get("name")
        try:
            decision = await request.app[keys.AUTHORIZER].check(
                principal, permission, namespace=namespace, name=name
            )
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("access review failed", extra={"error": type(exc).__name__})
            raise errors.dependency_unavailable("kubernetes") from None
        if not decision.allowed:
            where = f" in namespace {namespace}" if namespace else ""
            logs.security_event(
                logger,
                "authz.denied",
                actor=principal.user,
                verb=permission.verb,
                resource=permission.resource,
                namespace=namespace,
                name=name,
                source_ip=source,
            )
            raise errors.forbidden(
                f"User {principal.user!r} may not {permission.verb} "
                f"{permission.group}/{permission.resource}{where}."
            )
    request[keys.AUTHORIZED] = True
    return await handler(request)
