"""Webhooks: Dockyard's events delivered to HTTPS endpoints (docs/events.md).

- ``targets``: the Webhooks the operator knows, checked (URL, secret) and ready to sign.
- ``dockyard.core.webhook_deliveries`` (shared with the API, which redelivers): the
  ``webhook_deliveries`` table: fan-out from the event log, claims across replicas
  (``FOR UPDATE SKIP LOCKED`` with a lease), results and dead letters.
- ``dispatcher``: the loop that fans out, claims and delivers, with backoff, a breaker
  per endpoint and the SSRF guard, and writes each Webhook's status.
"""
