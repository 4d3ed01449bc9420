//! What the storm's (private) PostgreSQL says, read with plain SQL: the events stored, the dead
//! deliveries, and the state of deliveries that did not arrive (the evidence of a stranded delivery).

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use sqlx::{Connection, PgConnection};

type Time = chrono::DateTime<chrono::Utc>;

pub struct Database(PgConnection);

impl Database {
    pub async fn connect(url: &str) -> Self {
        Self(PgConnection::connect(url).await.expect("connect to the private PostgreSQL"))
    }

    pub async fn event_ids(&mut self) -> HashSet<String> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id::text FROM events").fetch_all(&mut self.0).await.expect("events");
        ids.into_iter().collect()
    }

    pub async fn dead_deliveries(&mut self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'dead'")
            .fetch_one(&mut self.0)
            .await
            .expect("dead deliveries")
    }

    /// The deliveries (webhook id, event id) in `missing`, grouped by status, attempts and last answer,
    /// with when they were created and last changed (seconds after `storm_began`) and when they are due.
    pub async fn report(&mut self, missing: &[(String, String)], storm_began: Instant) -> String {
        type Row = (String, String, String, i64, Option<i64>, Option<Time>, Time, Time);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT webhook_id::text, event_id::text, status, attempts, last_status_code, next_attempt_at, \
             created_at, updated_at FROM deliveries",
        )
        .fetch_all(&mut self.0)
        .await
        .expect("deliveries");
        let wanted: HashSet<&(String, String)> = missing.iter().collect();
        let (now, storm_age) = (chrono::Utc::now(), storm_began.elapsed().as_secs_f64());
        let from_now = |at: Time| (at - now).num_milliseconds() as f64 / 1000.0;
        let mut groups: HashMap<(String, i64, Option<i64>), Vec<[f64; 3]>> = HashMap::new();
        for (webhook, event, status, attempts, last_status, next_attempt_at, created_at, updated_at) in rows {
            if wanted.contains(&(webhook, event)) {
                let times = [
                    storm_age + from_now(created_at),
                    storm_age + from_now(updated_at),
                    next_attempt_at.map_or(0.0, from_now),
                ];
                groups.entry((status, attempts, last_status)).or_default().push(times);
            }
        }
        let range = |times: &[[f64; 3]], n: usize| {
            let (low, high) =
                times.iter().fold((f64::MAX, f64::MIN), |(low, high), t| (low.min(t[n]), high.max(t[n])));
            format!("{low:.1} to {high:.1} s")
        };
        let mut lines: Vec<String> = groups
            .iter()
            .map(|((status, attempts, last), times)| {
                format!(
                    "  {} {status} after {attempts} attempts (last status {last:?}): created {} and last \
                     changed {} into the storm, next_attempt_at in {}",
                    times.len(),
                    range(times, 0),
                    range(times, 1),
                    range(times, 2)
                )
            })
            .collect();
        lines.sort();
        let found: usize = groups.values().map(Vec::len).sum();
        lines.push(format!("  {} have no delivery row at all", missing.len() - found));
        lines.join("\n")
    }
}
