//! A bounded least-recently-used cache of statement analyses, keyed by
//! (database, statement text), shared by all sessions of a proxy.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::rewrite::analysis::Analysis;

/// Default number of analysed statements kept. Applications send a bounded
/// set of statement texts; ad-hoc literals make each text unique, so the cap
/// bounds memory at about this many texts (each at most
/// [`MAX_CACHED_TEXT_CHARS`]).
pub const DEFAULT_ANALYSIS_CACHE_CAP: usize = 4096;

/// Longest statement text that is cached; longer texts are analysed every
/// time (bulk INSERT scripts would otherwise fill the cache).
pub const MAX_CACHED_TEXT_CHARS: usize = 64 * 1024;

type Key = (String, String);

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, (Arc<Analysis>, u64)>,
    order: BTreeMap<u64, Key>,
    tick: u64,
}

/// The cache. Cloning shares it.
#[derive(Clone)]
pub struct AnalysisCache {
    cap: usize,
    inner: Arc<Mutex<Inner>>,
}

impl AnalysisCache {
    pub fn new(cap: usize) -> Self {
        AnalysisCache {
            cap: cap.max(1),
            inner: Arc::default(),
        }
    }

    /// The cached analysis, marking it as recently used.
    pub fn get(&self, database: &str, text: &str) -> Option<Arc<Analysis>> {
        let mut inner = self.inner.lock().ok()?;
        let key = (database.to_string(), text.to_string());
        inner.tick += 1;
        let tick = inner.tick;
        let (analysis, old) = inner.entries.get_mut(&key).map(|e| {
            let old = e.1;
            e.1 = tick;
            (Arc::clone(&e.0), old)
        })?;
        inner.order.remove(&old);
        inner.order.insert(tick, key);
        Some(analysis)
    }

    /// Stores an analysis, evicting the least recently used beyond the cap.
    pub fn insert(&self, database: &str, text: &str, analysis: Arc<Analysis>) {
        if text.len() > MAX_CACHED_TEXT_CHARS {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.tick += 1;
        let tick = inner.tick;
        let key = (database.to_string(), text.to_string());
        if let Some((_, old)) = inner.entries.insert(key.clone(), (analysis, tick)) {
            inner.order.remove(&old);
        }
        inner.order.insert(tick, key);
        while inner.entries.len() > self.cap {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.entries.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let cache = AnalysisCache::new(2);
        let a = Arc::new(Analysis::default());
        cache.insert("db", "a", Arc::clone(&a));
        cache.insert("db", "b", Arc::clone(&a));
        assert!(cache.get("db", "a").is_some());
        cache.insert("db", "c", Arc::clone(&a));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("db", "b").is_none());
        assert!(cache.get("db", "a").is_some());
        assert!(cache.get("other", "a").is_none());
    }
}
