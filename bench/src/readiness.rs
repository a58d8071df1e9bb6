//! When each object first reports Ready on its current generation, seen through one watch per kind
//! (what a user's `kubectl wait` sees), and when each was applied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};

use crate::workload::{self, Key, RUN_LABEL};

#[derive(Default)]
struct Times {
    applied: HashMap<Key, Instant>,
    ready: HashMap<Key, Instant>,
}

/// Apply and Ready times of a run's objects.
#[derive(Clone, Default)]
pub struct Tracker {
    times: Arc<Mutex<Times>>,
}

/// Whether an object is Ready for its current spec.
pub fn ready(object: &DynamicObject) -> bool {
    let generation = object.metadata.generation;
    let status = &object.data["status"];
    let observed = status["observedGeneration"].as_i64();
    observed.is_some()
        && observed == generation
        && status["conditions"].as_array().is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

impl Tracker {
    /// Watches `kinds` for objects labelled with `run`.
    pub fn start(client: &Client, run: &str, kinds: &[&'static str]) -> Tracker {
        let tracker = Tracker::default();
        for &kind in kinds {
            let api = workload::api(client, kind, None);
            let config = watcher::Config::default().labels(&format!("{RUN_LABEL}={run}"));
            let times = tracker.times.clone();
            tokio::spawn(async move {
                let mut objects = watcher(api, config)
                    .default_backoff()
                    .applied_objects()
                    .boxed();
                while let Some(next) = objects.next().await {
                    let Ok(object) = next else { continue };
                    if !ready(&object) {
                        continue;
                    }
                    let key = Key {
                        kind,
                        namespace: object.metadata.namespace.clone().unwrap_or_default(),
                        name: object.metadata.name.clone().unwrap_or_default(),
                    };
                    let mut times = times.lock().unwrap();
                    times.ready.entry(key).or_insert_with(Instant::now);
                }
            });
        }
        tracker
    }

    /// Records that `key` was applied now.
    pub fn applied(&self, key: Key) {
        self.times
            .lock()
            .unwrap()
            .applied
            .insert(key, Instant::now());
    }

    /// Waits until every one of `keys` is Ready, at most `timeout`; returns those that are not.
    pub async fn wait(&self, keys: &[Key], timeout: Duration) -> Vec<Key> {
        let deadline = Instant::now() + timeout;
        loop {
            let missing: Vec<Key> = {
                let times = self.times.lock().unwrap();
                keys.iter()
                    .filter(|k| !times.ready.contains_key(*k))
                    .cloned()
                    .collect()
            };
            if missing.is_empty() || Instant::now() >= deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Apply→Ready seconds of each of `keys` (those with both times).
    pub fn latencies(&self, keys: &[Key]) -> Vec<f64> {
        let times = self.times.lock().unwrap();
        keys.iter()
            .filter_map(|k| {
                let ready = times.ready.get(k)?;
                let applied = times.applied.get(k)?;
                Some(ready.saturating_duration_since(*applied).as_secs_f64())
            })
            .collect()
    }

    /// The latest Ready time among `keys`.
    pub fn last_ready(&self, keys: &[Key]) -> Option<Instant> {
        let times = self.times.lock().unwrap();
        keys.iter()
            .filter_map(|k| times.ready.get(k))
            .max()
            .copied()
    }
}
