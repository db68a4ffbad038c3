//! Concurrency limits: how many connections each client key holds open at once.
//!
//! One store per limit and host (each MX host counts its own connections), so a host
//! never waits on another's. A key is kept only while a connection holds a slot for it,
//! so a store holds at most as many keys as the host has connections open, which
//! `max-connections` bounds: it needs no cap of its own.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// Open connections per client key; a slot is given back when its guard is dropped.
#[derive(Debug, Default)]
pub struct ConcurrencyStore {
    open: Mutex<HashMap<String, u32>>,
}

/// One open connection counted against a key.
#[derive(Debug)]
pub struct ConcurrencySlot {
    store: Arc<ConcurrencyStore>,
    key: String,
}

impl ConcurrencyStore {
    /// Takes a slot for `key` unless `limit` connections already hold one.
    pub fn enter(self: &Arc<Self>, key: String, limit: u32) -> Option<ConcurrencySlot> {
        let mut open = self.open.lock();
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(ConcurrencySlot {
            store: self.clone(),
            key,
        })
    }

    /// Connections holding a slot for `key` now.
    #[cfg(test)]
    pub fn open(&self, key: &str) -> u32 {
        self.open.lock().get(key).copied().unwrap_or(0)
    }
}

impl Drop for ConcurrencySlot {
    fn drop(&mut self) {
        let mut open = self.store.open.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_slots_back_on_drop() {
        let store = Arc::new(ConcurrencyStore::default());
        let first = store.enter("k".into(), 2).unwrap();
        let second = store.enter("k".into(), 2).unwrap();
        assert!(store.enter("k".into(), 2).is_none());
        assert!(store.enter("other".into(), 2).is_some());
        drop(first);
        assert_eq!(store.open("k"), 1);
        assert!(store.enter("k".into(), 2).is_some());
        drop(second);
    }
}
