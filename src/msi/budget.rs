//! Token buckets that refuse rather than wait: the endpoint answers 429 with `Retry-After` when a
//! caller is past its budget, so one busy or hostile caller cannot slow the others.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests per second and burst allowed per key.
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once.
    pub burst: f64,
}

/// One bucket per key; a bucket idle for a minute is full again, so it is forgotten.
pub struct Budgets<K> {
    limit: RateLimit,
    buckets: Mutex<Buckets<K>>,
}

struct Buckets<K> {
    by_key: HashMap<K, (f64, Instant)>,
    /// Size at which idle buckets are dropped: twice what the last pruning kept, so pruning
    /// costs O(1) per request however many keys are busy.
    prune_at: usize,
}

/// Buckets kept before idle ones are first dropped.
const KEEP: usize = 4096;

impl<K: Hash + Eq> Budgets<K> {
    /// Buckets of `limit` each.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(Buckets {
                by_key: HashMap::new(),
                prune_at: KEEP,
            }),
        }
    }

    /// Takes one request from `key`'s budget, or says in how many seconds one is available.
    pub fn take(&self, key: K) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if buckets.by_key.len() >= buckets.prune_at {
            buckets
                .by_key
                .retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(60));
            buckets.prune_at = (2 * buckets.by_key.len()).max(KEEP);
        }
        let (tokens, at) = buckets.by_key.entry(key).or_insert((self.limit.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.limit.per_second)
            .min(self.limit.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        Err(((1.0 - *tokens) / self.limit.per_second).ceil().max(1.0) as u64)
    }

    /// Whether `key` has a request left, without taking it.
    pub fn has(&self, key: &K) -> bool {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.by_key.get(key).is_none_or(|(tokens, at)| {
            tokens + at.elapsed().as_secs_f64() * self.limit.per_second >= 1.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_past_its_burst_is_told_when_to_come_back_and_others_are_not_affected() {
        let budgets = Budgets::new(RateLimit {
            per_second: 0.5,
            burst: 3.0,
        });
        for _ in 0..3 {
            assert_eq!(budgets.take("a"), Ok(()));
        }
        assert!(!budgets.has(&"a"));
        assert_eq!(budgets.take("a"), Err(2), "one request refills in 2 s");
        assert!(budgets.has(&"b"));
        assert_eq!(budgets.take("b"), Ok(()));
    }
}
