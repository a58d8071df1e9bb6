//! The operator's own writes, recognised when their watch events come back: adding the finalizer
//! and writing an output Secret each used to trigger one more full reconcile of the object (every
//! read again, a status write from the stale snapshot), tripling the work of each new object.
//!
//! A write is recorded with the resourceVersion the API server answered; the event carrying exactly
//! that version is the echo and is dropped once. Anything else — a tenant's edit, a deletion, a
//! version we did not write — has another resourceVersion and triggers as before, so nothing
//! anyone else does is ever ignored. Bounded: echoes that never come (a watch restarted) age out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Echoes kept at most (past it, the oldest half goes).
const MAX_PENDING: usize = 16_384;
/// An echo not seen by then is not coming (the watch relisted instead).
const PENDING_FOR: Duration = Duration::from_secs(120);

/// (kind, namespace, name).
type Object = (String, String, String);

/// Each object's last own write: (resourceVersion written, when).
#[derive(Default)]
pub struct OwnWrites {
    pending: Mutex<HashMap<Object, (String, Instant)>>,
}

impl OwnWrites {
    /// Records that the operator wrote `kind` `namespace`/`name` at `resource_version`.
    pub fn wrote(&self, kind: &str, namespace: &str, name: &str, resource_version: Option<&str>) {
        let Some(rv) = resource_version else { return };
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
            (rv.to_owned(), Instant::now()),
        );
    }

    /// Whether an event of `kind` `namespace`/`name` at `resource_version` is the echo of the
    /// operator's own last write (consumed: the same version is never dropped twice).
    pub fn is_echo(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> bool {
        let Some(rv) = resource_version else {
            return false;
        };
        let key = (kind.to_owned(), namespace.to_owned(), name.to_owned());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get(&key) {
            Some((written, at)) if written == rv && at.elapsed() < PENDING_FOR => {
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
    fn only_the_version_written_is_an_echo_and_only_once() {
        let writes = OwnWrites::default();
        writes.wrote("Secret", "a", "s", Some("10"));
        assert!(
            !writes.is_echo("Secret", "a", "s", Some("9")),
            "an older version"
        );
        assert!(
            !writes.is_echo("Secret", "b", "s", Some("10")),
            "another namespace"
        );
        assert!(
            !writes.is_echo("Datastore", "a", "s", Some("10")),
            "another kind"
        );
        assert!(!writes.is_echo("Secret", "a", "s", None));
        assert!(writes.is_echo("Secret", "a", "s", Some("10")));
        assert!(!writes.is_echo("Secret", "a", "s", Some("10")), "consumed");
        writes.wrote("Secret", "a", "s", Some("11"));
        writes.wrote("Secret", "a", "s", Some("12"));
        assert!(
            !writes.is_echo("Secret", "a", "s", Some("11")),
            "only the last write is remembered: an earlier echo triggers as any event does"
        );
        assert!(writes.is_echo("Secret", "a", "s", Some("12")));
    }

    #[test]
    fn pending_echoes_stay_bounded() {
        let writes = OwnWrites::default();
        for i in 0..MAX_PENDING * 2 {
            writes.wrote("Secret", "a", &i.to_string(), Some("1"));
        }
        assert!(writes.pending.lock().unwrap().len() <= MAX_PENDING);
    }
}
