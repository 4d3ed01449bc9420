//! A small time-bounded cache: entries older than the TTL are never returned. Used for verified API keys
//! (so that authentication does not ask the database on every request) and for webhooks in the workers.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Entries kept before expired ones are swept (and, if all are fresh, everything is dropped).
const DEFAULT_CAPACITY: usize = 100_000;

#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, capacity: DEFAULT_CAPACITY, entries: Mutex::new(HashMap::new()) }
    }

    /// The value, if it was stored less than the TTL ago.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(key).filter(|(stored, _)| stored.elapsed() < self.ttl).map(|(_, value)| value.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (stored, _)| stored.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// Removes every entry whose value matches (e.g. all cache entries of a revoked key).
    pub fn remove_where(&self, matches: impl Fn(&V) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.retain(|_, (_, value)| !matches(value));
    }

    pub fn remove(&self, key: &K) {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_removed() {
        let cache = TtlCache::new(Duration::from_millis(50));
        cache.insert("a", 1);
        cache.insert("b", 2);
        assert_eq!(cache.get(&"a"), Some(1));
        cache.remove_where(|value| *value == 1);
        assert_eq!(cache.get(&"a"), None);
        cache.remove(&"b");
        assert_eq!(cache.get(&"b"), None);
        cache.insert("c", 3);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"c"), None, "expired");
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = TtlCache::new(Duration::ZERO);
        cache.insert(1, 1);
        assert_eq!(cache.get(&1), None);
    }

    #[test]
    fn capacity_is_bounded() {
        let mut cache = TtlCache::new(Duration::from_secs(60));
        cache.capacity = 3;
        for i in 0..10 {
            cache.insert(i, i);
        }
        assert!(cache.entries.lock().expect("lock").len() <= 3);
        assert_eq!(cache.get(&9), Some(9), "the newest entry is kept");
    }
}
