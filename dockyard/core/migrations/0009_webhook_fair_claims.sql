-- Claims are shared among namespaces (webhook_deliveries.claim): each pass looks up the
-- oldest due deliveries of each namespace that has Webhooks, so that one namespace's
-- backlog does not fill the batch every namespace shares. The index serves both the
-- per-namespace look-up and its order; the old index on next_at alone served the
-- single claim over every namespace, which no query makes any more.
CREATE INDEX webhook_deliveries_namespace_due_idx
    ON webhook_deliveries (namespace, next_at, id) WHERE state = 'pending';

DROP INDEX webhook_deliveries_due_idx;
