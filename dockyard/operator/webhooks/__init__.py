"""Webhooks: Dockyard's events delivered to HTTPS endpoints (docs/events.md).

- ``targets``: the Webhooks the operator knows, checked (URL, secret) and ready to sign.
- ``dockyard.core.webhook_deliveries`` (shared with the API, which redelivers): the
  ``webhook_deliveries`` table: fan-out from the event log, claims across replicas
  (``FOR UPDATE SKIP LOCKED`` with a lease), results and dead letters.
- ``dispatcher``: the loop that fans out, claims and delivers, with backoff, a breaker
  per endpoint and the SSRF guard; ``flights``, the delivery slots and who may claim
  them; ``lookups``, the deliveries' DNS in threads of their own; ``failures``, what a
  failed attempt is; ``statuses``, what each Webhook's status shows of them.
- ``retention``: forgetting deleted Webhooks' rows and purging old ones.
"""
