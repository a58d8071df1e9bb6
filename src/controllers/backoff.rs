//! When to look again at an object that is not ready, or whose reconcile failed: the outcome's own
//! interval, doubled for each consecutive failure of that object, with jitter, capped; and every
//! requeue clamped in one place, so no input (a forged annotation, an absurd `Retry-After`) can
//! schedule one beyond a day — the scheduler panics past about two years.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The longest any object waits before it is looked at again.
pub const MAX_REQUEUE: Duration = Duration::from_secs(24 * 3600);
/// The longest a failing object's backoff grows to (unless its own interval is longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// Consecutive failures per object, in memory (a restart starts every object afresh).
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The object succeeded (or is gone): its next failure starts from the base again.
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// One more failure of the object: `base` doubled per earlier consecutive failure, capped at
    /// [`MAX_BACKOFF`] (or `base` when that is longer), then ±10% jitter and [`clamp`].
    pub fn failed(&self, key: &str, base: Duration) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        let grown = base.saturating_mul(1 << (*n - 1).min(16));
        let capped = grown.min(MAX_BACKOFF.max(base));
        clamp(capped.mul_f64(0.9 + 0.2 * rand::random::<f64>()))
    }
}

/// A requeue between one second and [`MAX_REQUEUE`].
pub fn clamp(after: Duration) -> Duration {
    after.clamp(Duration::from_secs(1), MAX_REQUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_double_from_the_base_up_to_a_cap_and_reset() {
        let b = Backoff::default();
        let s = |d: Duration| d.as_secs_f64();
        let first = s(b.failed("x", Duration::from_secs(30)));
        assert!((27.0..=33.0).contains(&first), "{first}");
        let second = s(b.failed("x", Duration::from_secs(30)));
        assert!((54.0..=66.0).contains(&second), "{second}");
        for _ in 0..40 {
            b.failed("x", Duration::from_secs(30));
        }
        let capped = s(b.failed("x", Duration::from_secs(30)));
        assert!(capped <= s(MAX_BACKOFF) * 1.1, "{capped}");
        assert!(
            s(b.failed("y", Duration::from_secs(30))) < 34.0,
            "objects back off apart"
        );
        b.reset("x");
        assert!(s(b.failed("x", Duration::from_secs(30))) < 34.0);
        // A base longer than the cap is kept; nothing ever exceeds a day.
        assert!(s(b.failed("z", Duration::from_secs(3600))) >= 3240.0);
        assert_eq!(clamp(Duration::from_secs(u64::MAX)), MAX_REQUEUE);
        assert_eq!(clamp(Duration::ZERO), Duration::from_secs(1));
    }
}
