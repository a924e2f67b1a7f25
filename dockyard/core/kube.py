"""A small asynchronous Kubernetes client over aiohttp: the API's, the operator's, the tests'.

The API reads and writes through it, often with the caller's own token; the operator
does all its own reads and writes through it (its writes through
``dockyard.operator.apply``), while Kopf, on its own connection, watches the kinds and
keeps its handlers' progress; the Job runner reports a Backup's status with it; the
tests drive the test bed with it. Paths come from ``dockyard.core.resources``.

Why not the ``kubernetes`` package: its calls block, and nothing here may block the
event loop. Why not ``kubernetes_asyncio``: we need little of it (JSON in and out on a
handful of paths, watches, the caller's own token per call, a trace span per call) and a
thin client keeps those explicit.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from opentelemetry import trace
from yarl import URL

from dockyard.core import audit_ids, telemetry
from dockyard.core.breakers import Breakers, Dependency
from dockyard.core.kubeconfig import TOKEN_RELOAD_SECONDS, BearerToken, KubeConfig, load_config
from dockyard.core.settings import Settings


class KubeError(Exception):
    """The apiserver answered with an error ``Status``; ``status`` is its HTTP code."""

    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        self.status = status
        self.body = dict(body)
        self.reason = str(body.get("reason", ""))
        super().__init__(f"{status} {self.reason}: {body.get('message', '')}")

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


@dataclass(frozen=True)
class CallerToken:
    """A caller's own bearer token, sent instead of ours for a call made on their behalf.

    The apiserver then authenticates the caller itself (user, uid, groups, extra exactly
    as it knows them) and authorizes and audits the call as theirs: no impersonation.

    With ``audit_secret`` (the audit sink's token) each call carries an ``Audit-ID``
    marking it as the API's for ``username`` (``dockyard.core.audit_ids``), so that the
    audit sink does not record it a second time, as the caller's kubectl.
    """

    token: str = field(repr=False)
    username: str = ""
    audit_secret: str | None = field(default=None, repr=False)

    def audit_id(self, method: str, path: str) -> str | None:
        """The mark of one call, ``method`` on ``path``; None without the sink's token."""
        if self.audit_secret is None:
            return None
        return audit_ids.mint(self.audit_secret, self.username, method, path)


@dataclass(frozen=True, slots=True)
class KubeTimeouts:
    """The deadlines of apiserver calls, in seconds (``DOCKYARD_KUBE_*_TIMEOUT``).

    ``request`` bounds one call from sending to its last byte, waiting for a free
    connection of the pool included; ``connect`` bounds opening a TCP connection (not
    that wait: a burst of calls queued for the pool is slow, not broken); ``review`` the
    TokenReviews and SubjectAccessReviews a request waits on; ``watch_idle`` how long a
    watch stream may stay silent before it counts as hung.
    """

    connect: float = 5.0
    request: float = 30.0
    review: float = 5.0
    watch_idle: float = 330.0

    @classmethod
    def of(cls, settings: Settings) -> KubeTimeouts:
        return cls(
            connect=settings.kube_connect_timeout,
            request=settings.kube_request_timeout,
            review=settings.kube_review_timeout,
            watch_idle=settings.kube_watch_idle_timeout,
        )

    def call(self, total: float | None = None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total or self.request, sock_connect=self.connect)


class KubeClient:
    """JSON over HTTPS to one apiserver, as ourselves or with a caller's own token.

    Calls made with a caller's token go through ``caller_session``, whose connections
    present no client certificate of ours: the apiserver tries certificates before bearer
    tokens, so one would make the call ours again.
    """

    def __init__(
        self,
        config: KubeConfig,
        session: aiohttp.ClientSession,
        *,
        caller_session: aiohttp.ClientSession | None = None,
        token_reload_seconds: float = TOKEN_RELOAD_SECONDS,
        timeouts: KubeTimeouts | None = None,
        breakers: Breakers | None = None,
    ) -> None:
        if caller_session is None and config.caller_ssl_context is not None:
            raise ValueError("our client certificate would authenticate callers' calls")
        self.config = config
        self.session = session
        self.caller_session = caller_session or session
        self._token = BearerToken(config, token_reload_seconds)
        self.timeouts = timeouts or KubeTimeouts()
        self.breakers = breakers

    @classmethod
    def connect(
        cls,
        config: KubeConfig,
        *,
        limit: int = 100,
        tracer_provider: trace.TracerProvider | None = None,
        timeouts: KubeTimeouts | None = None,
        breakers: Breakers | None = None,
        user_agent: str = "dockyard",
    ) -> KubeClient:
        """A client with its own connection pool of ``limit`` connections.

        Every call is a CLIENT span of ``tracer_provider`` (the global one when unset),
        its context sent to the apiserver as ``traceparent``, and runs under
        ``timeouts`` and, when given, the apiserver's breaker of ``breakers``.
        """
        timeouts = timeouts or KubeTimeouts()
        tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)

        def session(context: ssl.SSLContext) -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context, limit=limit),
                headers={"Accept": "application/json", "User-Agent": user_agent},
                timeout=timeouts.call(),
                trace_configs=[telemetry.http_client_tracing(tracer, _span_name)],
                # Calls go out as ourselves and as each caller: nothing a response sets
                # (a proxy's cookie) may ride along with another's calls.
                cookie_jar=aiohttp.DummyCookieJar(),
            )

        callers = config.caller_ssl_context
        return cls(
            config,
            session(config.ssl_context),
            caller_session=session(callers) if callers is not None else None,
            timeouts=timeouts,
            breakers=breakers,
        )

    async def close(self) -> None:
        await self.session.close()
        if self.caller_session is not self.session:
            await self.caller_session.close()

    def _served(self, url: URL) -> str:
        """The path of ``url`` as the apiserver sees it: without the path of a server URL
        that names a proxy in front of it (``https://rancher/k8s/clusters/c-1``)."""
        prefix = URL(self.config.server).raw_path.rstrip("/")
        path = url.raw_path
        return path[len(prefix) :] if prefix and path.startswith(prefix + "/") else path

    def _headers(
        self,
        as_caller: CallerToken | None,
        content_type: str | None = None,
        call: tuple[str, str] = ("GET", "/"),
    ) -> list[tuple[str, str]]:
        """The headers of a call: ``call`` is its method and path, which a caller's
        ``Audit-ID`` marks."""
        headers: list[tuple[str, str]] = []
        if as_caller is not None:
            headers.append(("Authorization", f"Bearer {as_caller.token}"))
            if (audit_id := as_caller.audit_id(*call)) is not None:
                headers.append(("Audit-ID", audit_id))
        else:
            authorization = self._token.header()
            if authorization is not None:
                headers.append(("Authorization", authorization))
        if content_type:
            headers.append(("Content-Type", content_type))
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        as_caller: CallerToken | None = None,
        content_type: str = "application/json",
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """One call, as ourselves or (``as_caller``) with the caller's own token.

        A non-2xx answer raises ``KubeError`` with the apiserver's Status. The call may
        take ``deadline`` seconds (``timeouts.request`` when unset); a timeout or a failed
        connection raises ``DependencyUnavailable`` when the client has breakers.
        """
        if self.breakers is None:
            return await self._request(
                method, path, body, params, as_caller, content_type, deadline
            )
        async with self.breakers.guard(Dependency.KUBERNETES):
            return await self._request(
                method, path, body, params, as_caller, content_type, deadline
            )

    async def _request(
        self,
        method: str,
        path: str,
        body: Any,
        params: Mapping[str, str] | None,
        as_caller: CallerToken | None,
        content_type: str,
        deadline: float | None,
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body)
        session = self.session if as_caller is None else self.caller_session
        url = URL(self.config.server + path)
        async with session.request(
            method,
            url,
            data=data,
            params=params,
            headers=self._headers(
                as_caller, content_type if data is not None else None, (method, self._served(url))
            ),
            timeout=self.timeouts.call(deadline),
        ) as response:
            text = await response.text()
            try:
                payload = json.loads(text) if text else {}
            except ValueError:
                payload = {"message": text[:200]}
            if response.status >= 400:
                raise KubeError(response.status, payload if isinstance(payload, dict) else {})
            return payload if isinstance(payload, dict) else {"items": payload}

    async def get(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return await self.request("GET", path, **kwargs)

    async def create(self, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        return await self.request("POST", path, body=body, **kwargs)

    async def own_username(self) -> str | None:
        """This client's user name as the apiserver authenticates it (a SelfSubjectReview),
        or None when it cannot be asked."""
        try:
            review = await self.create(
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
        except (KubeError, OSError, TimeoutError):
            return None
        username = ((review.get("status") or {}).get("userInfo") or {}).get("username")
        return str(username) if username else None

    async def merge_patch(self, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        return await self.request(
            "PATCH", path, body=body, content_type="application/merge-patch+json", **kwargs
        )

    async def apply(
        self, path: str, body: Any, *, field_manager: str, force: bool = True, **kwargs: Any
    ) -> dict[str, Any]:
        """Server-side apply ``body`` at ``path`` (the object's own path), as ``field_manager``.

        The body is JSON, which is valid YAML. ``force`` takes over fields another manager
        set, which is how a controller restores what was edited by hand.
        """
        params = {"fieldManager": field_manager, "force": "true" if force else "false"}
        return await self.request(
            "PATCH",
            path,
            body=body,
            params=params,
            content_type="application/apply-patch+yaml",
            **kwargs,
        )

    async def delete(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return await self.request("DELETE", path, **kwargs)

    async def healthy(self) -> bool:
        try:
            async with self.session.get(
                self.config.server + "/readyz", headers=self._headers(None)
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def watch(
        self, path: str, *, resource_version: str | None = None, timeout_seconds: int = 300
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield watch events (``{"type": ..., "object": ...}``) until the server ends it."""
        params = {
            "watch": "1",
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "true",
        }
        if resource_version:
            params["resourceVersion"] = resource_version
        async with self.session.get(
            self.config.server + path,
            params=params,
            headers=self._headers(None),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.timeouts.connect, sock_read=self.timeouts.watch_idle
            ),
        ) as response:
            if response.status >= 400:
                raise KubeError(response.status, json.loads(await response.text() or "{}"))
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)


def path_template(path: str) -> str:
    """An apiserver path with its namespace and object name replaced by placeholders.

    ``/apis/dockyard.io/v1alpha1/namespaces/{namespace}/environments/{name}/status``: the
    shape of a call, few enough of them to name spans by.
    """
    parts = [part for part in path.split("/") if part]
    if not parts or parts[0] not in ("api", "apis"):
        return "/" + "/".join(parts)  # /readyz, /version, /openapi/v2
    split = 2 if parts[0] == "api" else 3  # /api/v1 or /apis/<group>/<version>
    shape, rest = parts[:split], parts[split:]
    if len(rest) > 2 and rest[0] == "namespaces":
        shape += ["namespaces", "{namespace}"]
        rest = rest[2:]
    if rest:
        shape.append(rest[0])  # the resource
    if len(rest) > 1:
        shape += ["{name}", *rest[2:]]  # the object and its subresource, if any
    return "/" + "/".join(shape)


def _span_name(method: str, url: URL) -> str:
    return f"{method} {path_template(url.path)}"


__all__ = [
    "CallerToken",
    "KubeClient",
    "KubeConfig",
    "KubeError",
    "KubeTimeouts",
    "load_config",
    "path_template",
]
