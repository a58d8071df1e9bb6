//! The operator's own writes, recognised when their watch events come back: adding the finalizer
//! and writing an output Secret each used to trigger one more full reconcile of the object (every
//! read again, a status write from the stale snapshot), tripling the work of each new object.
//!
//! A write is expected before it is sent, with a fingerprint of what its event will show (for a
//! custom resource what the trigger's predicates look at; for a Secret its annotations, which
//! record when its credentials were issued): the first event that shows exactly that is the echo
//! and is dropped, once. The expectation comes first because the watch often delivers the event
//! before the write's own answer arrives (recording the answered resourceVersion instead let one
//! new object in seven through to a second full reconcile). Anything else — a tenant's edit, a
//! deletion, any other version — shows something else and triggers as before; and a change made
//! between the expectation and the write makes the write fail its precondition (the finalizer
//! list's `test`, the Secret's resourceVersion), which withdraws the expectation. Bounded:
//! echoes that never come (a watch restarted) age out.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Echoes kept at most (past it, the oldest half goes).
const MAX_PENDING: usize = 16_384;
/// An echo not seen by then is not coming (the watch relisted instead).
const PENDING_FOR: Duration = Duration::from_secs(120);

/// (kind, namespace, name).
type Object = (String, String, String);

/// A fingerprint of what an event shows.
pub fn fingerprint(shown: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    shown.hash(&mut hasher);
    hasher.finish()
}

/// Each object's expected echo: (fingerprint, since when).
#[derive(Default)]
pub struct OwnWrites {
    pending: Mutex<HashMap<Object, (u64, Instant)>>,
}

impl OwnWrites {
    /// Records, before the write goes out, that the operator is about to write `kind`
    /// `namespace`/`name` so that its event will show `fingerprint`.
    pub fn expect(&self, kind: &str, namespace: &str, name: &str, fingerprint: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING {
            pending.retain(|_, (_, at)| at.elapsed() < PENDING_FOR);
            if pending.len() >= MAX_PENDING {
                let mut ages: Vec<Instant> = pending.values().map(|(_, at)| *at).collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                pending.retain(|_, (_, at)| *at > cut);
            }
        }
        pending.insert(
            (kind.to_owned(), namespace.to_owned(), name.to_owned()),
            (fingerprint, Instant::now()),
        );
    }

    /// The write expected for `kind` `namespace`/`name` did not happen: no echo is coming.
    pub fn withdraw(&self, kind: &str, namespace: &str, name: &str) {
        let key = (kind.to_owned(), namespace.to_owned(), name.to_owned());
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// Whether an event of `kind` `namespace`/`name` showing `fingerprint` is the echo of the
    /// operator's own last write (consumed: it is dropped once).
    pub fn is_echo(&self, kind: &str, namespace: &str, name: &str, fingerprint: u64) -> bool {
        let key = (kind.to_owned(), namespace.to_owned(), name.to_owned());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get(&key) {
            Some((expected, at)) if *expected == fingerprint && at.elapsed() < PENDING_FOR => {
                pending.remove(&key);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_was_expected_is_an_echo_and_only_once() {
        let writes = OwnWrites::default();
        writes.expect("Secret", "a", "s", 10);
        assert!(!writes.is_echo("Secret", "a", "s", 9), "something else");
        assert!(!writes.is_echo("Secret", "b", "s", 10), "another namespace");
        assert!(!writes.is_echo("Datastore", "a", "s", 10), "another kind");
        assert!(writes.is_echo("Secret", "a", "s", 10));
        assert!(!writes.is_echo("Secret", "a", "s", 10), "consumed");
        writes.expect("Secret", "a", "s", 11);
        writes.expect("Secret", "a", "s", 12);
        assert!(
            !writes.is_echo("Secret", "a", "s", 11),
            "only the last write is remembered: an earlier echo triggers as any event does"
        );
        assert!(writes.is_echo("Secret", "a", "s", 12));
        writes.expect("Secret", "a", "s", 13);
        writes.withdraw("Secret", "a", "s");
        assert!(!writes.is_echo("Secret", "a", "s", 13), "withdrawn");
    }

    #[test]
    fn pending_echoes_stay_bounded() {
        let writes = OwnWrites::default();
        for i in 0..MAX_PENDING * 2 {
            writes.expect("Secret", "a", &i.to_string(), 1);
        }
        assert!(writes.pending.lock().unwrap().len() <= MAX_PENDING);
    }
}
