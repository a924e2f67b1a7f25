"""Rate limits from RateLimitPolicy objects, enforced per request with GCRA.

``gcra`` (the arithmetic), ``rules`` (scope, match and keys), ``backends`` (memory or
Redis), ``decisions`` (one verdict and its headers), ``service`` (judging a request),
``status`` (what policies report), ``middleware`` and ``lifecycle`` (the app's side).
Semantics for users: ``docs/ratelimits.md``.
"""
