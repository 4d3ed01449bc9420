-- Finding messages (GET /api/v1/deliveries): an organization's deliveries newest first, optionally of
-- one status. Deliveries of one event use deliveries_event_webhook, of one webhook deliveries_webhook.
CREATE INDEX deliveries_organization ON deliveries (organization_id, id);
CREATE INDEX deliveries_organization_status ON deliveries (organization_id, status, id);
