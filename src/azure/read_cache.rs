//! Recent ARM reads of resources many objects share and nobody edits often — a user-assigned
//! identity, its federated credentials — so the objects naming one identity cost Azure one read per
//! `ttl`, not one each: ARM allows a principal 25 reads a second, which would otherwise bound how
//! fast a thousand ComputeIdentities converge.
//!
//! An entry belongs to the credential that read it (another principal may not be allowed to), is
//! dropped by every write through an [`super::arm::ArmClient`] sharing the cache, and holds only
//! what was found (a missing resource is read again). Bounded in size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most; past it, expired ones go, then all (reads are only ever saved, never
/// needed).
const MAX_ENTRIES: usize = 4096;

/// How long a read stands by default: a minute, so drift made in Azure is seen within one.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Shared recent reads.
pub struct ReadCache {
    ttl: Duration,
    entries: Mutex<HashMap<Key, (Instant, serde_json::Value)>>,
}

/// (credential, lower-case path, api-version).
type Key = (String, String, String);

impl Default for ReadCache {
    fn default() -> Self {
        Self::new(DEFAULT_TTL)
    }
}

impl ReadCache {
    /// Reads stand for `ttl` (zero: nothing is kept).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, serde_json::Value)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body `credential` read at `path` within the last `ttl`.
    pub fn get(
        &self,
        credential: &str,
        path: &str,
        api_version: &str,
    ) -> Option<serde_json::Value> {
        let key = key(credential, path, api_version);
        let mut entries = self.entries();
        match entries.get(&key) {
            Some((at, body)) if at.elapsed() < self.ttl => Some(body.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Keeps what `credential` found at `path`.
    pub fn put(&self, credential: &str, path: &str, api_version: &str, body: serde_json::Value) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key(credential, path, api_version), (Instant::now(), body));
    }

    /// Forgets every read of `path` and of what lies below it, by any credential (a write
    /// changed it, or a deletion took its children along).
    pub fn forget(&self, path: &str) {
        let path = path.trim_end_matches('/').to_ascii_lowercase();
        let below = format!("{path}/");
        self.entries()
            .retain(|(_, p, _), _| *p != path && !p.starts_with(&below));
    }
}

fn key(credential: &str, path: &str, api_version: &str) -> Key {
    (
        credential.to_owned(),
        // ARM ids are case-insensitive (ASCII only, as ArmPath folds them).
        path.trim_end_matches('/').to_ascii_lowercase(),
        api_version.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id";

    #[test]
    fn a_read_stands_for_its_credential_until_a_write_or_its_time() {
        let cache = ReadCache::new(Duration::from_secs(60));
        cache.put("a", ID, "v1", serde_json::json!({"x": 1}));
        assert_eq!(
            cache.get("a", &ID.to_uppercase(), "v1"),
            Some(serde_json::json!({"x": 1}))
        );
        assert_eq!(
            cache.get("b", ID, "v1"),
            None,
            "another credential reads for itself"
        );
        assert_eq!(
            cache.get("a", ID, "v2"),
            None,
            "another api-version is another read"
        );
        cache.forget(&format!("{ID}/federatedIdentityCredentials/f"));
        assert!(
            cache.get("a", ID, "v1").is_some(),
            "a child's write leaves the parent"
        );
        cache.put(
            "a",
            &format!("{ID}/federatedIdentityCredentials/f"),
            "v1",
            serde_json::json!(2),
        );
        cache.forget(ID);
        assert_eq!(cache.get("a", ID, "v1"), None);
        assert_eq!(
            cache.get("a", &format!("{ID}/federatedIdentityCredentials/f"), "v1"),
            None,
            "deleting a resource forgets its children"
        );
        let expired = ReadCache::new(Duration::ZERO);
        expired.put("a", ID, "v1", serde_json::json!(1));
        assert_eq!(expired.get("a", ID, "v1"), None);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = ReadCache::new(Duration::from_secs(60));
        for i in 0..MAX_ENTRIES * 2 {
            cache.put("a", &format!("{ID}{i}"), "v1", serde_json::json!(i));
        }
        assert!(cache.entries().len() <= MAX_ENTRIES);
    }
}
