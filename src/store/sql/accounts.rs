//! [`AccountStore`] on SQL: organizations, users, API keys and their usage counts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::DB;
use crate::domain::Role;
use crate::store::{
    AccountStore, ApiKey, ApiKeyQuery, Bootstrap, KeyOwner, KeyUsage, NewApiKey, NewEvent, NewUser,
    Organization, Page, StoreError, StoreResult, User, UserChanges,
    sql::{Backend, ResultExt, SqlStore},
};

macro_rules! key_columns {
    () => {
        "id, organization_id, user_id, prefix, name, purpose, is_active, expires_at, last_used_at, \
         total_requests, created_at, revoked_at"
    };
}
/// The filter of `list_api_keys` and `count_api_keys` ($1 organization, $2 user, $3/$4 last used).
macro_rules! key_filter {
    () => {
        " FROM api_keys WHERE organization_id = $1 AND revoked_at IS NULL \
          AND ($2 IS NULL OR user_id = $2) \
          AND ($3 IS NULL OR last_used_at >= $3) AND ($4 IS NULL OR last_used_at <= $4)"
    };
}
macro_rules! user_columns {
    () => {
        "id, organization_id, email, name, role, is_active, created_at"
    };
}

#[async_trait]
impl AccountStore for SqlStore<DB> {
    async fn bootstrap(&self, bootstrap: &Bootstrap, only_if_empty: bool) -> StoreResult<bool> {
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        if let Some(lock) = DB::BOOTSTRAP_LOCK_SQL {
            sqlx::query::<DB>(lock).execute(&mut *tx).await.store()?;
        }
        if only_if_empty {
            let (count,): (i64,) = sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM organizations")
                .fetch_one(&mut *tx)
                .await
                .store()?;
            if count > 0 {
                return Ok(false);
            }
        }
        let org = &bootstrap.organization;
        let (same_name,): (i64,) =
            sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM organizations WHERE name = $1")
                .bind(org.name.as_str())
                .fetch_one(&mut *tx)
                .await
                .store()?;
        if same_name > 0 {
            return Err(StoreError::Conflict(format!("an organization named '{}' exists", org.name)));
        }
        sqlx::query::<DB>(
            "INSERT INTO organizations (id, name, is_active, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(org.id)
        .bind(org.name.as_str())
        .bind(org.is_active)
        .bind(org.created_at)
        .execute(&mut *tx)
        .await
        .store()?;
        Self::insert_user(&mut tx, &bootstrap.admin).await?;
        Self::insert_api_key(&mut tx, &bootstrap.key).await?;
        tx.commit().await.store()?;
        Ok(true)
    }

    async fn get_organization(&self, id: Uuid) -> StoreResult<Option<Organization>> {
        sqlx::query_as::<DB, Organization>(
            "SELECT id, name, is_active, created_at FROM organizations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await
        .store()
    }

    async fn set_organization_active(&self, id: Uuid, active: bool) -> StoreResult<()> {
        let result = sqlx::query::<DB>("UPDATE organizations SET is_active = $2 WHERE id = $1")
            .bind(id)
            .bind(active)
            .execute(&self.write)
            .await
            .store()?;
        if DB::rows_affected(&result) == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn create_user(&self, user: &NewUser, announcement: Option<&NewEvent>) -> StoreResult<User> {
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        let created = Self::insert_user(&mut tx, user).await?;
        if let Some(announcement) = announcement {
            DB::insert_events(&mut tx, std::slice::from_ref(announcement)).await?;
        }
        tx.commit().await.store()?;
        Ok(created)
    }

    async fn organizations_named(&self, name: &str) -> StoreResult<Vec<Organization>> {
        sqlx::query_as::<DB, Organization>(
            "SELECT id, name, is_active, created_at FROM organizations WHERE name = $1 ORDER BY created_at",
        )
        .bind(name)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn find_user_by_email(&self, organization_id: Uuid, email: &str) -> StoreResult<Option<User>> {
        sqlx::query_as::<DB, User>(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE organization_id = $1 AND email = $2"
        ))
        .bind(organization_id)
        .bind(email)
        .fetch_optional(&self.read)
        .await
        .store()
    }

    async fn get_user(&self, id: Uuid) -> StoreResult<Option<User>> {
        sqlx::query_as::<DB, User>(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .store()
    }

    async fn list_users(&self, organization_id: Uuid, page: Page) -> StoreResult<Vec<User>> {
        sqlx::query_as::<DB, User>(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE organization_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(organization_id)
        .bind(page.cursor)
        .bind(page.limit)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn count_users(&self, organization_id: Uuid) -> StoreResult<u64> {
        let (count,): (i64,) =
            sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM users WHERE organization_id = $1")
                .bind(organization_id)
                .fetch_one(&self.read)
                .await
                .store()?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn update_user(&self, id: Uuid, changes: &UserChanges) -> StoreResult<Option<User>> {
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        // Locks the organization's row (PostgreSQL; SQLite has one writer anyway): the last-admin check
        // below then sees every concurrent change to the organization's users.
        sqlx::query::<DB>(
            "UPDATE organizations SET name = name WHERE id = (SELECT organization_id FROM users WHERE id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .store()?;
        let updated = sqlx::query_as::<DB, User>(concat!(
            "UPDATE users SET name = COALESCE($2, name), role = COALESCE($3, role), \
             is_active = COALESCE($4, is_active) WHERE id = $1 RETURNING ",
            user_columns!()
        ))
        .bind(id)
        .bind(changes.name.as_deref())
        .bind(changes.role.map(Role::as_str))
        .bind(changes.is_active)
        .fetch_optional(&mut *tx)
        .await
        .store()?;
        let Some(user) = updated else { return Ok(None) };
        let (admins,): (i64,) = sqlx::query_as::<DB, (i64,)>(
            "SELECT COUNT(*) FROM users WHERE organization_id = $1 AND role = 'admin' AND is_active",
        )
        .bind(user.organization_id)
        .fetch_one(&mut *tx)
        .await
        .store()?;
        if admins == 0 {
            return Err(StoreError::Conflict("last_admin".into()));
        }
        tx.commit().await.store()?;
        Ok(Some(user))
    }

    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKey> {
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        let created = Self::insert_api_key(&mut tx, key).await?;
        tx.commit().await.store()?;
        Ok(created)
    }

    async fn find_key_by_hash(&self, hash: &[u8]) -> StoreResult<Option<KeyOwner>> {
        sqlx::query_as::<DB, KeyOwner>(
            "SELECT k.id, k.organization_id, k.user_id, k.prefix, k.name, k.purpose, k.is_active, k.expires_at, \
             k.last_used_at, k.total_requests, k.created_at, k.revoked_at, u.role AS user_role, \
             u.is_active AS user_is_active, o.is_active AS organization_is_active \
             FROM api_keys k JOIN users u ON u.id = k.user_id JOIN organizations o ON o.id = k.organization_id \
             WHERE k.key_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.read)
        .await
        .store()
    }

    async fn get_api_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>> {
        sqlx::query_as::<DB, ApiKey>(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .store()
    }

    async fn list_api_keys(&self, query: &ApiKeyQuery) -> StoreResult<Vec<ApiKey>> {
        sqlx::query_as::<DB, ApiKey>(concat!(
            "SELECT ",
            key_columns!(),
            key_filter!(),
            " AND ($5 IS NULL OR id < $5) ORDER BY id DESC LIMIT $6"
        ))
        .bind(query.organization_id)
        .bind(query.user_id)
        .bind(query.used_from)
        .bind(query.used_to)
        .bind(query.page.cursor)
        .bind(query.page.limit)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn count_api_keys(&self, query: &ApiKeyQuery) -> StoreResult<u64> {
        let (count,): (i64,) = sqlx::query_as::<DB, (i64,)>(concat!("SELECT COUNT(*)", key_filter!()))
            .bind(query.organization_id)
            .bind(query.user_id)
            .bind(query.used_from)
            .bind(query.used_to)
            .fetch_one(&self.read)
            .await
            .store()?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn revoke_api_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        let result = sqlx::query::<DB>(
            "UPDATE api_keys SET revoked_at = $2, is_active = FALSE WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(at)
        .execute(&self.write)
        .await
        .store()?;
        Ok(DB::rows_affected(&result) > 0)
    }

    async fn record_key_usage(&self, usage: &[KeyUsage]) -> StoreResult<()> {
        if usage.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        for entry in usage {
            sqlx::query::<DB>(
                "UPDATE api_keys SET total_requests = total_requests + $2, \
                 last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $3 THEN $3 ELSE last_used_at END \
                 WHERE id = $1",
            )
            .bind(entry.key_id)
            .bind(entry.requests)
            .bind(entry.last_used_at)
            .execute(&mut *tx)
            .await
            .store()?;
        }
        tx.commit().await.store()
    }
}

/// Statements shared by several operations, run inside the caller's transaction.
impl SqlStore<DB> {
    async fn insert_user(tx: &mut sqlx::Transaction<'static, DB>, user: &NewUser) -> StoreResult<User> {
        sqlx::query_as::<DB, User>(concat!(
            "INSERT INTO users (id, organization_id, email, name, role, is_active, created_at) \
             VALUES ($1, $2, $3, $4, $5, TRUE, $6) RETURNING ",
            user_columns!()
        ))
        .bind(user.id)
        .bind(user.organization_id)
        .bind(user.email.as_str())
        .bind(user.name.as_deref())
        .bind(user.role.as_str())
        .bind(user.created_at)
        .fetch_one(&mut **tx)
        .await
        .store()
    }

    async fn insert_api_key(tx: &mut sqlx::Transaction<'static, DB>, key: &NewApiKey) -> StoreResult<ApiKey> {
        sqlx::query_as::<DB, ApiKey>(concat!(
            "INSERT INTO api_keys (id, organization_id, user_id, key_hash, prefix, name, purpose, is_active, \
             expires_at, total_requests, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, $8, 0, $9) \
             RETURNING ",
            key_columns!()
        ))
        .bind(key.id)
        .bind(key.organization_id)
        .bind(key.user_id)
        .bind(key.key_hash.as_slice())
        .bind(key.prefix.as_str())
        .bind(key.name.as_str())
        .bind(key.purpose.as_str())
        .bind(key.expires_at)
        .bind(key.created_at)
        .fetch_one(&mut **tx)
        .await
        .store()
    }
}
