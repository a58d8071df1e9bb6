//! The Secrets the operator reads and never writes — a credential's client secret or certificate, a
//! storage account key — kept between reconciles while the shared Secret watch runs, instead of one
//! GET per reconcile of every object that uses them. Any watch event for a kept Secret drops it,
//! and a relisting watch drops them all, so a reconcile never gets an older version than the API
//! server would give it; a GET a change raced is not kept. Only Secrets the operator asked for are
//! kept (a cluster's other Secrets cost nothing here), and nothing here is ever logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// What is known of one Secret: a version counter bumped by every event for it, and its content
/// when read since the last event.
#[derive(Default)]
struct Slot {
    epoch: u64,
    secret: Option<Arc<Secret>>,
}

#[derive(Default)]
struct State {
    /// Whether the watch has listed and is running: only then are reads kept or served.
    live: bool,
    /// The one namespace the watch sees (`None`: all); a Secret elsewhere is never kept.
    scope: Option<String>,
    slots: HashMap<(String, String), Slot>,
}

enum Begin {
    Kept(Arc<Secret>),
    Read(Option<u64>),
}

/// The kept input Secrets. `Debug` shows none of them.
#[derive(Default)]
pub struct InputSecrets {
    state: Mutex<State>,
}

impl std::fmt::Debug for InputSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSecrets").finish_non_exhaustive()
    }
}

impl InputSecrets {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Secret `namespace/name`: the kept copy, or one GET (kept when no event came for it
    /// meanwhile and the watch is live). `None` when it does not exist.
    pub async fn get(
        &self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> kube::Result<Option<Arc<Secret>>> {
        let key = (namespace.to_owned(), name.to_owned());
        let epoch = match self.begin(&key) {
            Begin::Kept(secret) => return Ok(Some(secret)),
            Begin::Read(epoch) => epoch,
        };
        let read = Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(|mut secret| {
                // Never read here, and often most of the object.
                secret.metadata.managed_fields = None;
                Arc::new(secret)
            });
        self.finish(&key, epoch, read.as_ref());
        Ok(read)
    }

    /// The kept copy, or the epoch a read starts at (`None`: the watch is not live, keep nothing).
    fn begin(&self, key: &(String, String)) -> Begin {
        let mut state = self.state();
        let watched = state.scope.as_ref().is_none_or(|ns| *ns == key.0);
        if !state.live || !watched {
            return Begin::Read(None);
        }
        let slot = state.slots.entry(key.clone()).or_default();
        match &slot.secret {
            Some(secret) => Begin::Kept(secret.clone()),
            None => Begin::Read(Some(slot.epoch)),
        }
    }

    /// Keeps what a read from `epoch` returned, unless an event or a relist came meanwhile.
    fn finish(&self, key: &(String, String), epoch: Option<u64>, read: Option<&Arc<Secret>>) {
        let Some(epoch) = epoch else { return };
        let mut state = self.state();
        let live = state.live;
        match (read, state.slots.get_mut(key)) {
            (Some(secret), Some(slot)) if live && slot.epoch == epoch => {
                slot.secret = Some(secret.clone());
            }
            // A missing Secret is asked for again next time, and takes no room meanwhile.
            (None, Some(slot)) if slot.secret.is_none() => {
                state.slots.remove(key);
            }
            _ => {}
        }
    }

    /// An event for `namespace/name` (changed, created or deleted): its kept copy goes.
    pub fn changed(&self, namespace: &str, name: &str) {
        let mut state = self.state();
        if let Some(slot) = state
            .slots
            .get_mut(&(namespace.to_owned(), name.to_owned()))
        {
            slot.epoch = slot.epoch.wrapping_add(1);
            slot.secret = None;
        }
    }

    /// The watch (re)lists, or stops: nothing kept can be trusted until `listed`.
    pub fn relisting(&self) {
        let mut state = self.state();
        state.live = false;
        for slot in state.slots.values_mut() {
            slot.epoch = slot.epoch.wrapping_add(1);
            slot.secret = None;
        }
    }

    /// The watch of `scope` (one namespace, or `None`: all) has listed every Secret in it: from
    /// now on its events keep copies current.
    pub fn listed(&self, scope: Option<&str>) {
        let mut state = self.state();
        state.live = true;
        state.scope = scope.map(str::to_owned);
    }

    /// How many Secrets are kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.state()
            .slots
            .values()
            .filter(|s| s.secret.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> (String, String) {
        (ns.to_owned(), name.to_owned())
    }

    /// A read of `k` as `get` makes it, answered with a Secret.
    fn read(cache: &InputSecrets, k: &(String, String)) -> bool {
        match cache.begin(k) {
            Begin::Kept(_) => true,
            Begin::Read(epoch) => {
                cache.finish(k, epoch, Some(&Arc::new(Secret::default())));
                false
            }
        }
    }

    #[test]
    fn kept_only_while_the_watch_is_live_and_until_an_event_for_it() {
        let cache = InputSecrets::default();
        let a = key("a", "s");
        assert!(!read(&cache, &a), "before the watch listed: asked");
        assert!(!read(&cache, &a), "and not kept");
        cache.listed(None);
        assert!(!read(&cache, &a));
        assert!(read(&cache, &a), "kept once the watch is live");
        assert_eq!(cache.kept(), 1);
        cache.changed("a", "s");
        assert!(!read(&cache, &a), "an event for it drops it");
        assert!(read(&cache, &a));
        cache.changed("a", "other");
        assert!(
            !cache.state().slots.contains_key(&key("a", "other")),
            "an event for a Secret never asked for takes no room"
        );
        cache.relisting();
        assert_eq!(cache.kept(), 0, "a relist drops everything");
        assert!(!read(&cache, &a), "and nothing is kept until listed again");
        assert!(!read(&cache, &a));
    }

    #[test]
    fn a_secret_outside_the_watched_namespace_is_never_kept() {
        let cache = InputSecrets::default();
        cache.listed(Some("team"));
        let other = key("elsewhere", "s");
        assert!(!read(&cache, &other));
        assert!(!read(&cache, &other), "no event would ever drop it");
        let mine = key("team", "s");
        assert!(!read(&cache, &mine));
        assert!(read(&cache, &mine));
    }

    #[test]
    fn a_read_an_event_overtook_is_not_kept_and_a_missing_secret_takes_no_room() {
        let cache = InputSecrets::default();
        cache.listed(None);
        let a = key("a", "s");
        let Begin::Read(epoch) = cache.begin(&a) else {
            panic!("nothing kept yet")
        };
        cache.changed("a", "s");
        cache.finish(&a, epoch, Some(&Arc::new(Secret::default())));
        assert_eq!(
            cache.kept(),
            0,
            "the version read may be older than the event's"
        );
        let Begin::Read(epoch) = cache.begin(&a) else {
            panic!("nothing kept")
        };
        cache.relisting();
        cache.listed(None);
        cache.finish(&a, epoch, Some(&Arc::new(Secret::default())));
        assert_eq!(cache.kept(), 0, "nor one a relist overtook");
        let missing = key("a", "missing");
        let Begin::Read(epoch) = cache.begin(&missing) else {
            panic!("nothing kept")
        };
        cache.finish(&missing, epoch, None);
        assert!(!cache.state().slots.contains_key(&missing));
    }
}
