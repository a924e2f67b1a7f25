-- A Webhook's deliveries, newest first, are listed over REST
-- (GET .../webhooks/{name}/deliveries, dockyard/api/delivery_history.py), all of them
-- or one state's, a page at a time by id. Each index serves one of the two as a range
-- scan; the (webhook_uid, state, id) one also serves everything the one it replaces
-- served (counts by state, parking, waking, redelivering: webhook_uid and state).
CREATE INDEX webhook_deliveries_history_idx ON webhook_deliveries (webhook_uid, id);

CREATE INDEX webhook_deliveries_webhook_state_idx
    ON webhook_deliveries (webhook_uid, state, id);

DROP INDEX webhook_deliveries_webhook_idx;
