//! [`DeliveryStore`] on SQL: deliveries, their claims and leases, and the attempts that move them on.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::DB;
use crate::store::{
    Attempt, AttemptOutcome, Delivery, DeliveryQuery, DeliveryStatus, DeliveryStore, DisabledWebhook,
    DueDelivery, Happening, NewDelivery, NextStep, OutcomeRules, Recorded, ReplayFilter, StoreResult,
    sql::{BATCH_ROWS, Backend, ResultExt, SqlStore, push_id_list},
};

#[async_trait]
impl DeliveryStore for SqlStore<DB> {
    async fn create_deliveries(&self, deliveries: &[NewDelivery]) -> StoreResult<Vec<Uuid>> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.write.acquire().await.store()?;
        DB::insert_deliveries(&mut conn, deliveries).await
    }

    async fn unstarted_deliveries(&self, event_ids: &[Uuid]) -> StoreResult<Vec<Delivery>> {
        let mut found = Vec::new();
        for chunk in event_ids.chunks(BATCH_ROWS) {
            let mut query = QueryBuilder::<DB>::new(concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM deliveries WHERE status = 'queued' AND attempts = 0 AND event_id IN "
            ));
            push_id_list(&mut query, chunk);
            found.extend(query.build_query_as::<Delivery>().fetch_all(&self.read).await.store()?);
        }
        Ok(found)
    }

    async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<DueDelivery>> {
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        let claimed = sqlx::query_as::<DB, Delivery>(DB::CLAIM_DUE_SQL)
            .bind(now)
            .bind(lease_until)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .store()?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let event_ids: Vec<Uuid> = claimed.iter().map(|d| d.event_id).collect();
        let mut payloads = std::collections::HashMap::with_capacity(event_ids.len());
        for chunk in event_ids.chunks(BATCH_ROWS) {
            let mut query =
                QueryBuilder::<DB>::new("SELECT id, event_type, payload FROM events WHERE id IN ");
            push_id_list(&mut query, chunk);
            let rows: Vec<(Uuid, String, String)> =
                query.build_query_as().fetch_all(&mut *tx).await.store()?;
            payloads.extend(rows.into_iter().map(|(id, event_type, payload)| (id, (event_type, payload))));
        }
        tx.commit().await.store()?;
        Ok(claimed
            .into_iter()
            .filter_map(|delivery| {
                let (event_type, payload) = payloads.get(&delivery.event_id)?.clone();
                Some(DueDelivery {
                    delivery_id: delivery.id,
                    event_id: delivery.event_id,
                    webhook_id: delivery.webhook_id,
                    organization_id: delivery.organization_id,
                    attempts: delivery.attempts,
                    event_type,
                    payload,
                })
            })
            .collect())
    }

    async fn extend_claims(
        &self,
        ids: &[Uuid],
        claimed_until: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut extended = 0;
        for chunk in ids.chunks(BATCH_ROWS) {
            let mut query = QueryBuilder::<DB>::new("UPDATE deliveries SET next_attempt_at = ");
            query.push_bind(lease_until);
            // On PostgreSQL a row locked now is being recorded (its task was attempted already): it is
            // skipped, not waited for, since the outcome's write moves it out of the claim anyway, and
            // waiting on it, in whatever order the two statements lock their rows, could deadlock.
            query.push(" WHERE id IN (SELECT id FROM deliveries");
            push_in_claim(&mut query, claimed_until, chunk);
            query.push(DB::LOCK_PICKED).push(")");
            extended += DB::rows_affected(&query.build().execute(&self.write).await.store()?);
        }
        Ok(extended)
    }

    async fn release_deliveries(
        &self,
        ids: &[Uuid],
        claimed_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        for chunk in ids.chunks(BATCH_ROWS) {
            let mut query =
                QueryBuilder::<DB>::new("UPDATE deliveries SET status = 'pending', next_attempt_at = ");
            query.push_bind(now);
            push_in_claim(&mut query, claimed_until, chunk);
            query.build().execute(&self.write).await.store()?;
        }
        Ok(())
    }

    async fn defer_deliveries(
        &self,
        deferrals: &[(Uuid, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        for chunk in deferrals.chunks(BATCH_ROWS) {
            let mut query = QueryBuilder::<DB>::new("WITH deferral (id, due_at) AS (");
            query.push_values(chunk, |mut row, (id, due_at)| {
                row.push_bind(*id).push_bind(*due_at);
            });
            query.push(
                ") UPDATE deliveries SET status = 'pending', next_attempt_at = deferral.due_at, updated_at = ",
            );
            query
                .push_bind(now)
                .push(" FROM deferral WHERE deliveries.id = deferral.id AND deliveries.status = 'queued'");
            query.build().execute(&self.write).await.store()?;
        }
        Ok(())
    }

    async fn requeue_all_queued(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let result = sqlx::query::<DB>("UPDATE deliveries SET next_attempt_at = $1 WHERE status = 'queued'")
            .bind(now)
            .execute(&self.write)
            .await
            .store()?;
        Ok(DB::rows_affected(&result))
    }

    async fn record_outcomes(
        &self,
        outcomes: &[AttemptOutcome],
        rules: &dyn OutcomeRules,
    ) -> StoreResult<Recorded> {
        if outcomes.is_empty() {
            return Ok(Recorded::default());
        }
        // One transaction: no one sees an attempt whose consequences (the webhook's run of dead
        // deliveries, its disabling, the statistics, the operational events) are missing.
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        let moved: HashSet<Uuid> = DB::apply_outcomes(&mut tx, outcomes).await?.into_iter().collect();
        // Only outcomes that moved their delivery on count: a stale duplicate changes nothing.
        let moved: Vec<&AttemptOutcome> =
            outcomes.iter().filter(|o| moved.contains(&o.attempt.delivery_id)).collect();
        let mut recorded = Recorded::default();
        recovered(&mut tx, &moved, rules, &mut recorded).await?;
        // Webhook rows in id order, so that two recorders never wait on each other in a cycle.
        let mut dead: Vec<&AttemptOutcome> =
            moved.iter().copied().filter(|o| matches!(o.next, NextStep::Dead)).collect();
        dead.sort_by_key(|o| o.webhook_id);
        for outcome in dead {
            recorded.announced.extend(rules.announce(&Happening::DeliveryDead { outcome }));
            let run: Option<(i64,)> = sqlx::query_as::<DB, (i64,)>(
                "UPDATE webhooks SET consecutive_dead = consecutive_dead + 1 WHERE id = $1 RETURNING consecutive_dead",
            )
            .bind(outcome.webhook_id)
            .fetch_optional(&mut *tx)
            .await
            .store()?;
            // No row: the webhook was deleted meanwhile.
            let Some((run,)) = run else { continue };
            if let Some(reason) = rules.disable(outcome, u32::try_from(run).unwrap_or(u32::MAX)) {
                let result = sqlx::query::<DB>(
                    "UPDATE webhooks SET is_active = FALSE, disabled_reason = $2, updated_at = $3 \
                     WHERE id = $1 AND is_active = TRUE",
                )
                .bind(outcome.webhook_id)
                .bind(reason.as_str())
                .bind(outcome.attempt.ended_at())
                .execute(&mut *tx)
                .await
                .store()?;
                if DB::rows_affected(&result) > 0 {
                    let happening = Happening::WebhookDisabled { outcome, reason: &reason };
                    recorded.announced.extend(rules.announce(&happening));
                    recorded.disabled.push(DisabledWebhook { webhook_id: outcome.webhook_id, reason });
                }
            }
        }
        super::stats::write_rollups(&mut tx, &moved).await?;
        // In chunks of one statement each: the events' insert opens no transaction of its own then.
        for chunk in recorded.announced.chunks(BATCH_ROWS) {
            DB::insert_events(&mut tx, chunk).await?;
        }
        tx.commit().await.store()?;
        Ok(recorded)
    }

    async fn get_delivery(&self, id: Uuid) -> StoreResult<Option<Delivery>> {
        sqlx::query_as::<DB, Delivery>(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await
        .store()
    }

    async fn list_attempts(&self, delivery_id: Uuid) -> StoreResult<Vec<Attempt>> {
        sqlx::query_as::<DB, Attempt>(
            "SELECT id, delivery_id, attempt_number, started_at, duration_ms, status_code, response_body, error \
             FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt_number, started_at",
        )
        .bind(delivery_id)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn list_deliveries(&self, query: &DeliveryQuery) -> StoreResult<Vec<Delivery>> {
        sqlx::query_as::<DB, Delivery>(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries d WHERE organization_id = $1 AND ($2 IS NULL OR webhook_id = $2) \
              AND ($3 IS NULL OR event_id = $3) AND ($4 IS NULL OR status = $4) \
              AND ($5 IS NULL OR EXISTS (SELECT 1 FROM events e WHERE e.id = d.event_id AND e.event_type = $5)) \
              AND ($6 IS NULL OR created_at >= $6) AND ($7 IS NULL OR created_at <= $7) \
              AND ($8 IS NULL OR id < $8) ORDER BY id DESC LIMIT $9"
        ))
        .bind(query.organization_id)
        .bind(query.webhook_id)
        .bind(query.event_id)
        .bind(query.status.map(DeliveryStatus::as_str))
        .bind(query.event_type.as_deref())
        .bind(query.since)
        .bind(query.until)
        .bind(query.page.cursor)
        .bind(query.page.limit)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn redrive_delivery(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<Delivery>> {
        sqlx::query_as::<DB, Delivery>(concat!(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = $2, completed_at = NULL, updated_at = $2 \
             WHERE id = $1 AND status <> 'queued' RETURNING ",
            delivery_columns!()
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&self.write)
        .await
        .store()
    }

    async fn list_dead_deliveries(
        &self,
        organization_id: Option<Uuid>,
        webhook_id: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        sqlx::query_as::<DB, Delivery>(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE status = 'dead' AND ($1 IS NULL OR organization_id = $1) \
              AND ($2 IS NULL OR webhook_id = $2) ORDER BY updated_at DESC, id DESC LIMIT $3"
        ))
        .bind(organization_id)
        .bind(webhook_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn replay_deliveries(&self, filter: &ReplayFilter, now: DateTime<Utc>) -> StoreResult<u64> {
        let result = sqlx::query::<DB>(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, completed_at = NULL, updated_at = $1 \
             WHERE status = $2 AND ($2 <> 'pending' OR attempts > 0) \
               AND ($3 IS NULL OR organization_id = $3) AND ($4 IS NULL OR webhook_id = $4) \
               AND ($5 IS NULL OR created_at >= $5) AND ($6 IS NULL OR created_at <= $6)",
        )
        .bind(now)
        .bind(filter.status.as_str())
        .bind(filter.organization_id)
        .bind(filter.webhook_id)
        .bind(filter.since)
        .bind(filter.until)
        .execute(&self.write)
        .await
        .store()?;
        Ok(DB::rows_affected(&result))
    }

    async fn count_replayable(&self, filter: &ReplayFilter) -> StoreResult<u64> {
        let (count,): (i64,) = sqlx::query_as::<DB, (i64,)>(
            "SELECT COUNT(*) FROM deliveries WHERE status = $1 AND ($1 <> 'pending' OR attempts > 0) \
               AND ($2 IS NULL OR organization_id = $2) AND ($3 IS NULL OR webhook_id = $3) \
               AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR created_at <= $5)",
        )
        .bind(filter.status.as_str())
        .bind(filter.organization_id)
        .bind(filter.webhook_id)
        .bind(filter.since)
        .bind(filter.until)
        .fetch_one(&self.read)
        .await
        .store()?;
        Ok(u64::try_from(count).unwrap_or_default())
    }
}

/// Ends the run of dead deliveries of every webhook with a success among `moved`, and announces the
/// webhooks whose run it ended (they recovered), each caused by its first success of the batch.
async fn recovered(
    tx: &mut <DB as sqlx::Database>::Connection,
    moved: &[&AttemptOutcome],
    rules: &dyn OutcomeRules,
    recorded: &mut Recorded,
) -> StoreResult<()> {
    let mut first_success: std::collections::BTreeMap<Uuid, &AttemptOutcome> = Default::default();
    for outcome in moved.iter().filter(|o| o.next == NextStep::Succeeded) {
        first_success.entry(outcome.webhook_id).or_insert(outcome);
    }
    let ids: Vec<Uuid> = first_success.keys().copied().collect();
    for chunk in ids.chunks(BATCH_ROWS) {
        let mut query = QueryBuilder::<DB>::new(
            "UPDATE webhooks SET consecutive_dead = 0 WHERE consecutive_dead > 0 AND id IN ",
        );
        push_id_list(&mut query, chunk);
        query.push(" RETURNING id");
        let reset: Vec<(Uuid,)> = query.build_query_as().fetch_all(&mut *tx).await.store()?;
        for outcome in reset.iter().filter_map(|(id,)| first_success.get(id)) {
            recorded.announced.extend(rules.announce(&Happening::WebhookRecovered { outcome }));
        }
    }
    Ok(())
}

/// Appends the condition "still in the claim that lasts until `claimed_until`" for `ids`: queued, with
/// the lease that claim set (an outcome recorded since, or a later claim, changed it).
fn push_in_claim(query: &mut QueryBuilder<DB>, claimed_until: DateTime<Utc>, ids: &[Uuid]) {
    query
        .push(" WHERE status = 'queued' AND next_attempt_at = ")
        .push_bind(claimed_until)
        .push(" AND id IN ");
    push_id_list(query, ids);
}
