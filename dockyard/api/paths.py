"""What a path parameter may be: Kubernetes names, checked before anything reads them.

aiohttp decodes ``%2F`` inside a path parameter, so ``{name}`` can carry ``x/../../b/r``;
put into an apiserver path, that is normalized into another namespace's object after
authorization was decided for this one. Every ``{namespace}`` must therefore be a
DNS-1123 label and every ``{name}`` a DNS-1123 subdomain, as the apiserver itself would
require, before authentication, authorization or the rate limiter see them. The same
patterns are published in the OpenAPI document.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from dockyard.api import errors, keys, transport
from dockyard.api.ratelimit.addresses import address_group
from dockyard.core import logs

logger = logging.getLogger(__name__)
_refusals = logs.EventSampler()

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"


@dataclass(frozen=True)
class NameRule:
    """The form a Kubernetes name of one kind takes."""

    description: str
    pattern: str
    max_length: int

    def matches(self, value: str) -> bool:
        return len(value) <= self.max_length and re.fullmatch(self.pattern, value) is not None

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": self.pattern, "maxLength": self.max_length}


DNS_LABEL = NameRule("a DNS-1123 label", f"^{_LABEL}$", 63)
DNS_SUBDOMAIN = NameRule("a DNS-1123 subdomain", rf"^{_LABEL}(\.{_LABEL})*$", 253)

# By path parameter name; every route's parameters are among these.
PATH_PARAMETERS: dict[str, NameRule] = {"namespace": DNS_LABEL, "name": DNS_SUBDOMAIN}


def invalid_name(parameter: str, rule: NameRule) -> errors.Problem:
    return errors.INVALID_NAME(
        f"The {parameter} must be {rule.description} "
        f"(lowercase letters, digits, '-', at most {rule.max_length} characters).",
        errors=[errors.FieldError(field=parameter, message=f"not {rule.description}")],
    )


@web.middleware
async def validate_path_parameters(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a request whose ``{namespace}`` or ``{name}`` is not a Kubernetes name.

    Such a request reaches neither the limiter nor the audit trail (it names nothing that
    could be recorded), so it is logged as a security event, ``paths.name_refused``: an
    encoded ``/`` in a name is how one would try to reach another namespace's object.
    One line per client address every 10 s, as a client can send them at will.
    """
    for parameter, rule in PATH_PARAMETERS.items():
        value = request.match_info.get(parameter)
        if value is not None and not rule.matches(value):
            settings = request.app[keys.SETTINGS]
            source = transport.client_ip(request, settings.trusted_proxies) or "-"
            if _refusals.due(address_group(source, settings.client_networks)):
                logs.security_event(
                    logger,
                    "paths.name_refused",
                    method=request.method,
                    path=logs.clipped(request.path),
                    parameter=parameter,
                    source_ip=source,
                )
            raise invalid_name(parameter, rule)
    return await handler(request)
