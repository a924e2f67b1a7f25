"""The RateLimitPolicy kind: how hard clients may call the platform's REST API.

This module owns the policy's spec and status models, the CEL rules the API server
enforces on them, and the CRD metadata (short name ``rlp``, printer columns). The API
enforces the rules (``dockyard.api.ratelimit``); this module only says what a valid
policy is, so that ``kubectl apply`` and ``POST .../ratelimitpolicies`` refuse the same
mistakes in the same words.

Whatever the schema cannot say is CEL: a ``header`` exactly when the key is a header,
and a ``cost`` that a full bucket can pay (a rule whose cost exceeds
``requests + burst`` could never let a request through).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Final

from pydantic import Field

from dockyard.core.models.common import CRModel, CustomResource, status_field
from dockyard.core.models.declarations import CRDInfo, PrinterColumn, ValidationRule
from dockyard.core.models.status import Status

# A rule's name appears in response headers (RateLimit-Policy) and metric labels.
RULE_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# An HTTP field name (RFC 9110 token), as a header key names it.
HEADER_NAME_PATTERN: Final = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
# A route template (/api/v1/namespaces/{namespace}/environments) or a prefix ending in *.
PATH_PATTERN: Final = r"^/[-A-Za-z0-9._~/{}]*\*?$"
# Kubernetes' own names for callers without valid credentials; rules match them.
ANONYMOUS_USER: Final = "system:anonymous"
UNAUTHENTICATED_GROUP: Final = "system:unauthenticated"


class RateLimitMode(StrEnum):
    """Whether a policy rejects requests over its limits or only reports them."""

    ENFORCE = "Enforce"
    SHADOW = "Shadow"


class Period(StrEnum):
    """The time unit of a limit."""

    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @property
    def seconds(self) -> int:
        """The period's length in seconds."""
        return _PERIOD_SECONDS[self]


_PERIOD_SECONDS: Final = {
    Period.SECOND: 1,
    Period.MINUTE: 60,
    Period.HOUR: 3600,
    Period.DAY: 86400,
}


class KeyType(StrEnum):
    """What one bucket is counted for: each subject, each client address or each header value."""

    SUBJECT = "Subject"
    CLIENT_IP = "ClientIP"
    HEADER = "Header"


class HttpMethod(StrEnum):
    """An HTTP method a rule can match."""

    GET = "GET"
    HEAD = "HEAD"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"
    OPTIONS = "OPTIONS"


class RateLimitConditionType(StrEnum):
    """The conditions a RateLimitPolicy reports."""

    ACCEPTED = "Accepted"


class RuleMatch(CRModel):
    """Which requests a rule counts. Every field that is set must match; an empty match
    counts every request in the policy's scope."""

    subjects: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=64
    )
    """User names the rule applies to, as the Kubernetes API authenticates them (for example alice
    or system:serviceaccount:ci:deployer). Callers without valid credentials are
    system:anonymous. Together with groups this says who is counted: the caller matches when
    their user is listed here or one of their groups is listed in groups. Both empty: everyone."""
    groups: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=64
    )
    """Groups the rule applies to, for example system:authenticated (every caller with valid
    credentials) or system:unauthenticated (every caller without)."""
    methods: list[HttpMethod] = Field(default_factory=list, max_length=7)
    """HTTP methods the rule applies to; empty: every method."""
    paths: list[Annotated[str, Field(min_length=1, max_length=256, pattern=PATH_PATTERN)]] = Field(
        default_factory=list, max_length=64
    )
    """Request paths the rule applies to; empty: every path. An entry is a route template of the
    REST API, matched exactly (for example /api/v1/namespaces/{namespace}/environments), or a
    prefix ending in * matched against the request's path and its route template (for example
    /api/v1/namespaces/*)."""


class RateLimit(CRModel):
    """How many requests a bucket lets through per period, in the long run."""

    requests: int = Field(gt=0, le=1_000_000_000)
    """Requests allowed per period (in units of cost). Must be positive."""
    period: Period
    """The period the requests are counted over: second, minute, hour or day."""


class RateLimitRule(CRModel):
    """One limit: which requests it counts, how many it allows, and per what key."""

    list_map_keys = ("name",)
    cel_rules = (
        ValidationRule(
            rule="has(self.header) == (self.key == 'Header')",
            message="header is required when key is Header, and allowed only then",
            field_path=".header",
        ),
        ValidationRule(
            rule="self.cost <= self.limit.requests + self.burst",
            message=("cost must not exceed limit.requests + burst, or no request could ever pass"),
            field_path=".cost",
        ),
    )

    name: str = Field(min_length=1, max_length=63, pattern=RULE_NAME_PATTERN)
    """Name of the rule, unique within the policy: lowercase letters, digits and dashes. It names
    the rule in RateLimit-Policy headers, metrics and status."""
    match: RuleMatch = Field(default_factory=RuleMatch)
    """Which requests the rule counts; empty: every request in scope."""
    limit: RateLimit
    """The sustained rate: requests per period."""
    burst: int = Field(default=0, ge=0, le=1_000_000_000)
    """Requests allowed on top of limit.requests when a client has been idle: a key at rest may send
    requests + burst at once, then limit.requests per period."""
    key: KeyType = KeyType.SUBJECT
    """What each bucket counts for. Subject: each authenticated user (callers without valid
    credentials are counted by client address). ClientIP: each client address, read through the
    API's trusted proxies. Header: each value of the header named in header (requests without it
    are counted by client address)."""
    header: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=HEADER_NAME_PATTERN
    )
    """The request header whose value is the key; required when key is Header."""
    cost: int = Field(default=1, ge=1, le=1_000_000_000)
    """Units one matching request takes from the bucket; at most limit.requests + burst."""


class RateLimitPolicySpec(CRModel):
    """The desired limits."""

    mode: RateLimitMode = RateLimitMode.ENFORCE
    """Enforce rejects requests over a limit with 429 Too Many Requests. Shadow only counts and logs
    what would have been rejected, to try a policy safely."""
    rules: list[RateLimitRule] = Field(min_length=1, max_length=32)
    """The limits. A request is counted by every rule that matches it, and must pass every matching
    rule of every Enforce policy in scope."""


class ThrottleCount(CRModel):
    """The requests one rule throttled in the current window."""

    list_map_keys = ("rule",)

    rule: str
    """Name of the rule."""
    count: int = Field(ge=0)
    """Requests the rule rejected (in Shadow mode: would have rejected) since windowStart, across
    every API replica."""
    window_start: datetime
    """Start of the counting window; windows are one hour long, in UTC."""
    last_throttle_time: datetime | None = None
    """When the rule last throttled a request."""


class RateLimitPolicyStatus(Status):
    """What the API made of the policy, written periodically by one API replica."""

    field_descriptions: ClassVar[Mapping[str, str]] = {
        "observed_generation": "The .metadata.generation the API last accepted.",
        "conditions": (
            "Accepted: True when every rule is in force; False with the reason when "
            "the policy is ignored or part of it can never match."
        ),
    }

    rules: int | None = Field(default=None, ge=0)
    """Number of the policy's rules the API has in force."""
    throttled: list[ThrottleCount] = Field(default_factory=list, max_length=32)
    """Requests throttled in the current hour, per rule that throttled any."""


class RateLimitPolicy(CustomResource):
    """A RateLimitPolicy limits how often clients may call the Dockyard REST API."""

    crd = CRDInfo(
        kind="RateLimitPolicy",
        plural="ratelimitpolicies",
        short_names=("rlp",),
        printer_columns=(
            PrinterColumn("Mode", "string", ".spec.mode", "Enforce or Shadow."),
            PrinterColumn("Rules", "integer", ".status.rules", "Rules the API has in force."),
            PrinterColumn.condition(
                "Accepted",
                RateLimitConditionType.ACCEPTED,
                "Whether the API has every rule in force.",
            ),
        ),
    )

    spec: RateLimitPolicySpec
    """The desired limits. A policy in the platform's namespace (dockyard-system) applies to every
    request; a policy in another namespace applies only to requests about that namespace's
    objects (paths with that {namespace})."""
    status: RateLimitPolicyStatus = status_field(
        RateLimitPolicyStatus, "What the API made of the policy, and the throttles it observed."
    )
