"""The rate limiter's Prometheus instruments, in the API's registry.

Label values are bounded: policies and rules are objects an administrator (or a tenant,
in its own namespace) creates, and a rule's series go when it is no longer in force
(``RateLimiting.forget_removed_rules``); decisions and backends are fixed sets. Keys
(users, addresses, header values) are never labels.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ALLOWED = "allowed"
THROTTLED = "throttled"
SHADOW = "shadow"  # a Shadow policy's rule that would have throttled


class RateLimitMetrics:
    """Decisions per policy and rule, backend failures, check latency, rules in force."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "dockyard_api_ratelimit_decisions",
            "Rule answers: allowed, throttled (Enforce) or shadow (a Shadow rule that "
            "would have throttled), by policy (namespace/name) and rule.",
            ["policy", "rule", "decision"],
            registry=registry,
        )
        self.backend_errors = Counter(
            "dockyard_api_ratelimit_backend_errors",
            "Requests whose counters could not be reached, by backend and by what the "
            "failure mode did (open: allowed unchecked, closed: counted in the replica's memory).",
            ["backend", "failure_mode"],
            registry=registry,
        )
        self.memory_evictions = Counter(
            "dockyard_api_ratelimit_memory_evictions",
            "Live buckets the in-memory limiter dropped, nearest to full first, because it "
            "reached DOCKYARD_RATELIMIT_MEMORY_BUCKETS.",
            registry=registry,
        )
        self.check_duration = Histogram(
            "dockyard_api_ratelimit_check_duration_seconds",
            "Time to evaluate and charge one request's buckets, by backend.",
            ["backend"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0),
            registry=registry,
        )
        self.rules = Gauge(
            "dockyard_api_ratelimit_rules",
            "Rules in force, from the RateLimitPolicy objects the API watches.",
            registry=registry,
        )
