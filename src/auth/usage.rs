//! Key usage (`last_used_at`, `total_requests`) counted in memory and written in batches: every
//! `auth.usage_flush_interval` and once more at shutdown. Authenticating a request never writes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{AccountStore, KeyUsage};

#[derive(Debug, Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<Uuid, (i64, DateTime<Utc>)>>,
}

impl UsageRecorder {
    /// Counts one request made with `key_id` at `at`.
    pub fn record(&self, key_id: Uuid, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = pending.entry(key_id).or_insert((0, at));
        entry.0 += 1;
        entry.1 = entry.1.max(at);
    }

    /// Requests counted but not yet written, and the latest time, for one key.
    pub fn unflushed(&self, key_id: Uuid) -> Option<(i64, DateTime<Utc>)> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key_id).copied()
    }

    fn take(&self) -> Vec<KeyUsage> {
        let drained =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        drained
            .into_iter()
            .map(|(key_id, (requests, last_used_at))| KeyUsage { key_id, requests, last_used_at })
            .collect()
    }

    /// Writes what was counted. On failure the counts are put back, to be written next time.
    pub async fn flush(&self, store: &dyn AccountStore) {
        let usage = self.take();
        if usage.is_empty() {
            return;
        }
        if let Err(error) = store.record_key_usage(&usage).await {
            crate::outage::warn_unless_reported!(&error, %error, keys = usage.len(), "could not write key usage; will retry");
            let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for entry in usage {
                let slot = pending.entry(entry.key_id).or_insert((0, entry.last_used_at));
                slot.0 += entry.requests;
                slot.1 = slot.1.max(entry.last_used_at);
            }
        }
    }

    /// Flushes every `interval` until `shutdown`, then once more.
    pub async fn run(&self, store: Arc<dyn AccountStore>, interval: Duration, shutdown: CancellationToken) {
        crate::stages::every(interval, &shutdown, || self.flush(store.as_ref())).await;
        self.flush(store.as_ref()).await;
    }
}
