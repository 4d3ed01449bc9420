-- Every change to a webhook notifies `herald_webhook_changed` with "{webhook id} {organization id}", in
-- the changing transaction: delivered at commit (and only then) to every Herald process, which forgets
-- its cached copy (src/webhook_cache.rs). Counting dead deliveries (consecutive_dead) changes nothing a
-- worker caches, so it does not notify. SQLite has no notifications (one process, or the TTL).
CREATE FUNCTION herald_webhook_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('herald_webhook_changed', OLD.id::text || ' ' || OLD.organization_id::text);
    ELSE
        PERFORM pg_notify('herald_webhook_changed', NEW.id::text || ' ' || NEW.organization_id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhooks_changed
    AFTER INSERT OR DELETE OR UPDATE OF organization_id, url, events, is_active, disabled_reason, secret_key_id,
        secret_ciphertext, previous_secret_key_id, previous_secret_ciphertext, previous_secret_expires_at,
        updated_at
    ON webhooks FOR EACH ROW EXECUTE FUNCTION herald_webhook_changed();
