//! [`WebhookStore`] on SQL: webhook subscriptions and their secrets.

use async_trait::async_trait;
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::DB;
use crate::store::{
    NewWebhook, Page, SecretRotation, StoreResult, Webhook, WebhookChanges, WebhookStore,
    sql::{Backend, ResultExt, SqlStore},
};

macro_rules! webhook_columns {
    () => {
        "id, organization_id, url, events, secret_key_id, secret_ciphertext, previous_secret_key_id, \
         previous_secret_ciphertext, previous_secret_expires_at, is_active, description, disabled_reason, \
         consecutive_dead, created_at, updated_at"
    };
}

#[async_trait]
impl WebhookStore for SqlStore<DB> {
    async fn create_webhook(&self, webhook: &NewWebhook) -> StoreResult<Webhook> {
        sqlx::query_as::<DB, Webhook>(concat!(
            "INSERT INTO webhooks (id, organization_id, url, events, secret_key_id, secret_ciphertext, \
             description, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING ",
            webhook_columns!()
        ))
        .bind(webhook.id)
        .bind(webhook.organization_id)
        .bind(webhook.url.as_str())
        .bind(webhook.events.as_str())
        .bind(webhook.secret.key_id.as_str())
        .bind(webhook.secret.ciphertext.as_slice())
        .bind(webhook.description.as_deref())
        .bind(webhook.created_at)
        .fetch_one(&self.write)
        .await
        .store()
    }

    async fn get_webhook(&self, id: Uuid) -> StoreResult<Option<Webhook>> {
        sqlx::query_as::<DB, Webhook>(concat!("SELECT ", webhook_columns!(), " FROM webhooks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .store()
    }

    async fn list_webhooks(&self, organization_id: Uuid, page: Page) -> StoreResult<Vec<Webhook>> {
        sqlx::query_as::<DB, Webhook>(concat!(
            "SELECT ",
            webhook_columns!(),
            " FROM webhooks WHERE organization_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(organization_id)
        .bind(page.cursor)
        .bind(page.limit)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn count_webhooks(&self, organization_id: Uuid) -> StoreResult<u64> {
        let (count,): (i64,) =
            sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM webhooks WHERE organization_id = $1")
                .bind(organization_id)
                .fetch_one(&self.read)
                .await
                .store()?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn active_webhooks(&self, organization_id: Uuid) -> StoreResult<Vec<Webhook>> {
        sqlx::query_as::<DB, Webhook>(concat!(
            "SELECT ",
            webhook_columns!(),
            " FROM webhooks WHERE organization_id = $1 AND is_active = TRUE ORDER BY created_at, id"
        ))
        .bind(organization_id)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn update_webhook(&self, id: Uuid, changes: &WebhookChanges) -> StoreResult<Option<Webhook>> {
        let mut query = QueryBuilder::<DB>::new("UPDATE webhooks SET updated_at = ");
        query.push_bind(changes.updated_at);
        if let Some(url) = &changes.url {
            query.push(", url = ").push_bind(url.clone());
        }
        if let Some(events) = &changes.events {
            query.push(", events = ").push_bind(events.clone());
        }
        if let Some(description) = &changes.description {
            query.push(", description = ").push_bind(description.clone());
        }
        match changes.is_active {
            Some(true) => {
                query.push(", is_active = TRUE, disabled_reason = NULL, consecutive_dead = 0");
            }
            Some(false) => {
                query
                    .push(", is_active = FALSE, disabled_reason = ")
                    .push_bind(changes.disabled_reason.clone());
            }
            None => {}
        }
        query.push(" WHERE id = ").push_bind(id).push(concat!(" RETURNING ", webhook_columns!()));
        query.build_query_as::<Webhook>().fetch_optional(&self.write).await.store()
    }

    async fn rotate_webhook_secret(
        &self,
        id: Uuid,
        rotation: &SecretRotation,
    ) -> StoreResult<Option<Webhook>> {
        sqlx::query_as::<DB, Webhook>(concat!(
            "UPDATE webhooks SET secret_key_id = $2, secret_ciphertext = $3, previous_secret_key_id = $4, \
             previous_secret_ciphertext = $5, previous_secret_expires_at = $6, updated_at = $7 \
             WHERE id = $1 RETURNING ",
            webhook_columns!()
        ))
        .bind(id)
        .bind(rotation.secret.key_id.as_str())
        .bind(rotation.secret.ciphertext.as_slice())
        .bind(rotation.previous.key_id.as_str())
        .bind(rotation.previous.ciphertext.as_slice())
        .bind(rotation.previous_expires_at)
        .bind(rotation.updated_at)
        .fetch_optional(&self.write)
        .await
        .store()
    }

    async fn delete_webhook(&self, id: Uuid) -> StoreResult<bool> {
        let result = sqlx::query::<DB>("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.write)
            .await
            .store()?;
        Ok(DB::rows_affected(&result) > 0)
    }
}
