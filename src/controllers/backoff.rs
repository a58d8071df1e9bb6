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

/// What one reconcile decided about the next look at its object.
#[derive(Clone, Copy, Debug, Default)]
pub struct Verdict {
    /// Whether the object is Ready.
    pub ready: bool,
    /// The outcome's own interval (`None`: only a change brings it back).
    pub requeue: Option<Duration>,
    /// A retry its status already announced that is still ahead (Unix seconds).
    pub pending: Option<i64>,
    /// The latest the next try may come when the object is failing (a renewal whose Secret runs
    /// out), however long the backoff has grown.
    pub retry_within: Option<Duration>,
}

impl Backoff {
    /// When to look at `key` again after `verdict`, and the time to announce as its next retry.
    /// A ready object comes back at its own interval; a failing one backs off, except that a retry
    /// still ahead stands (a pass triggered by something else or by a restart neither grows the
    /// backoff nor moves it) and `retry_within` caps the wait.
    pub fn next_attempt(
        &self,
        key: &str,
        verdict: Verdict,
        now: i64,
    ) -> (Option<Duration>, Option<i64>) {
        let (requeue, next_retry) = match (verdict.requeue, verdict.pending) {
            (Some(_), Some(at)) if !verdict.ready && at > now => (
                Some(clamp(Duration::from_secs(at.saturating_sub(now) as u64))),
                Some(at),
            ),
            (Some(base), _) if !verdict.ready => {
                let after = self.failed(key, base);
                (Some(after), Some(now + after.as_secs() as i64))
            }
            (other, _) => {
                self.reset(key);
                return (other.map(clamp), None);
            }
        };
        match (requeue, verdict.retry_within) {
            (Some(after), Some(cap)) if after > cap => {
                let after = clamp(cap);
                (Some(after), Some(now + after.as_secs() as i64))
            }
            _ => (requeue, next_retry),
        }
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

    #[test]
    fn a_failing_renewal_is_tried_again_within_its_cap_however_long_the_backoff() {
        let b = Backoff::default();
        let failing = |within: Option<u64>| Verdict {
            ready: false,
            requeue: Some(Duration::from_secs(60)),
            pending: None,
            retry_within: within.map(Duration::from_secs),
        };
        for _ in 0..10 {
            b.failed("x", Duration::from_secs(60));
        }
        let (grown, _) = b.next_attempt("x", failing(None), 1000);
        assert!(grown.unwrap() > Duration::from_secs(600), "{grown:?}");
        let (capped, at) = b.next_attempt("x", failing(Some(30)), 1000);
        assert_eq!(capped, Some(Duration::from_secs(30)));
        assert_eq!(at, Some(1030), "status announces the capped retry");
        // Never below a second, whatever the cap says.
        let (floor, _) = b.next_attempt("x", failing(Some(0)), 1000);
        assert_eq!(floor, Some(Duration::from_secs(1)));
    }

    #[test]
    fn an_announced_retry_stands_and_success_resets() {
        let b = Backoff::default();
        let verdict = Verdict {
            ready: false,
            requeue: Some(Duration::from_secs(30)),
            pending: Some(1100),
            retry_within: None,
        };
        assert_eq!(
            b.next_attempt("x", verdict, 1000),
            (Some(Duration::from_secs(100)), Some(1100)),
            "an earlier pass's retry is kept, the backoff not grown"
        );
        // Once it has passed, the backoff grows from the base.
        let (after, _) = b.next_attempt(
            "x",
            Verdict {
                pending: Some(900),
                ..verdict
            },
            1000,
        );
        assert!((27..=33).contains(&after.unwrap().as_secs()), "{after:?}");
        let (again, _) = b.next_attempt(
            "x",
            Verdict {
                pending: None,
                ..verdict
            },
            1000,
        );
        assert!((54..=66).contains(&again.unwrap().as_secs()), "{again:?}");
        let ready = Verdict {
            ready: true,
            requeue: Some(Duration::from_secs(3600)),
            ..Default::default()
        };
        assert_eq!(
            b.next_attempt("x", ready, 1000),
            (Some(Duration::from_secs(3600)), None)
        );
        let (reset, _) = b.next_attempt(
            "x",
            Verdict {
                pending: None,
                ..verdict
            },
            1000,
        );
        assert!((27..=33).contains(&reset.unwrap().as_secs()), "{reset:?}");
    }
}
