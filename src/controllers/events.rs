//! Events on reconciled objects, including cluster-scoped ones.
//!
//! An Event that repeats one this process published less than six minutes ago (same object, type,
//! reason, action and note) becomes a count on that one, an `EventSeries`, as kube's and client-go's
//! recorders do. What is remembered for that is a few bytes per Event, at most [`MAX_RECENT`] of
//! them, dropped in the order they were last seen. (kube's `Recorder` keeps every Event it
//! published in the last six minutes whole and walks all of them on each publish: 20 MB and a
//! quadratic walk for a burst of 4,000 new objects.)
//!
//! An Event about a cluster-scoped object has to live in some namespace: `default`, which API
//! servers before 1.22 refuse (`involvedObject.namespace "" does not match event.namespace`); they
//! accept such Events only in `kube-system`. The first refusal switches this process to
//! `kube-system` for cluster-scoped objects; `kubectl describe` finds them in either place.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client};

const CLUSTER_EVENTS: &str = "default";
const CLUSTER_EVENTS_FALLBACK: &str = "kube-system";
/// How long an Event can still be counted again (as client-go's and kube's recorders).
const SERIES_WINDOW_SECONDS: i64 = 6 * 60;
/// Events remembered for counting repeats; past it the least recently seen is forgotten (its next
/// repeat is a new Event, as after the window).
pub const MAX_RECENT: usize = 4096;

/// Publishes Events; one per process.
pub struct Events {
    client: Client,
    reporter: Reporter,
    /// Set once `default` refused an Event about a cluster-scoped object.
    cluster_in_kube_system: AtomicBool,
    recent: Mutex<Recent>,
}

/// Events published recently, by a hash of what they say.
#[derive(Default)]
struct Recent {
    hasher: RandomState,
    by_key: HashMap<u64, Seen>,
    /// Keys in the order they were first seen, with when they were last seen then.
    order: VecDeque<(u64, i64)>,
}

/// One Event published: enough to name it again and count it.
#[derive(Clone, Copy)]
struct Seen {
    /// Its name's suffix (the time it was made, in nanoseconds).
    stamp: i128,
    count: i32,
    /// Unix seconds.
    last: i64,
}

impl Recent {
    fn key(&self, event: &Event, regarding: &ObjectReference) -> u64 {
        self.hasher.hash_one((
            matches!(event.type_, EventType::Warning),
            &event.reason,
            &event.action,
            &event.note,
            &regarding.uid,
            &regarding.kind,
            &regarding.namespace,
            &regarding.name,
            event.secondary.as_ref().map(|r| (&r.uid, &r.kind, &r.name)),
        ))
    }

    /// Forgets what has not been seen within the window.
    fn prune(&mut self, now: i64) {
        while let Some(&(key, queued)) = self.order.front() {
            match self.by_key.get(&key).map(|s| s.last) {
                // Seen again since it was queued: to the back, with when.
                Some(last) if last > queued => {
                    self.order.pop_front();
                    self.order.push_back((key, last));
                }
                Some(last) if last + SERIES_WINDOW_SECONDS > now => break,
                _ => {
                    self.order.pop_front();
                    self.by_key.remove(&key);
                }
            }
        }
    }

    /// Forgets the least recently seen.
    fn evict_least_recent(&mut self) {
        while let Some((key, queued)) = self.order.pop_front() {
            match self.by_key.get(&key).map(|s| s.last) {
                Some(last) if last > queued => self.order.push_back((key, last)),
                Some(_) => {
                    self.by_key.remove(&key);
                    return;
                }
                None => {}
            }
        }
    }

    /// The series count after one more observation of `key`, or `None` when it is new.
    fn repeat(&mut self, key: u64, now: i64) -> Option<Seen> {
        self.prune(now);
        let seen = self.by_key.get_mut(&key)?;
        seen.count = seen.count.saturating_add(1);
        seen.last = now;
        Some(*seen)
    }

    fn remember(&mut self, key: u64, stamp: i128, now: i64) {
        let fresh = self
            .by_key
            .insert(
                key,
                Seen {
                    stamp,
                    count: 1,
                    last: now,
                },
            )
            .is_none();
        if fresh {
            self.order.push_back((key, now));
        }
        while self.by_key.len() > MAX_RECENT {
            self.evict_least_recent();
        }
    }
}

impl Events {
    /// Events reported as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            cluster_in_kube_system: AtomicBool::new(false),
            recent: Default::default(),
        }
    }

    /// Publishes `event` about the object `regarding`: a new Event, or one more count on the
    /// same Event published less than six minutes ago.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = jiff::Timestamp::now();
        let (key, repeat) = {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            let key = recent.key(event, regarding);
            (key, recent.repeat(key, now.as_second()))
        };
        if let Some(seen) = repeat {
            let series = serde_json::json!({"series": EventSeries {
                count: seen.count,
                last_observed_time: MicroTime(now),
            }});
            let name = event_name(regarding, &self.reporter, seen.stamp);
            match self
                .api(self.namespace(regarding))
                .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                // Gone (the API server's Event TTL, or deleted): a new one below.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                other => return other.map(|_| ()),
            }
        }
        let stamp = now.as_nanosecond();
        self.create(event, regarding, now, stamp).await?;
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remember(key, stamp, now.as_second());
        Ok(())
    }

    /// Where Events about `regarding` live.
    fn namespace<'a>(&self, regarding: &'a ObjectReference) -> &'a str {
        match &regarding.namespace {
            Some(ns) => ns.as_str(),
            None if self.cluster_in_kube_system.load(Ordering::Relaxed) => CLUSTER_EVENTS_FALLBACK,
            None => CLUSTER_EVENTS,
        }
    }

    fn api(&self, namespace: &str) -> Api<K8sEvent> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn create(
        &self,
        event: &Event,
        regarding: &ObjectReference,
        now: jiff::Timestamp,
        stamp: i128,
    ) -> Result<(), kube::Error> {
        let object = K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            metadata: ObjectMeta {
                name: Some(event_name(regarding, &self.reporter, stamp)),
                ..Default::default()
            },
            ..Default::default()
        };
        let namespace = self.namespace(regarding);
        let created = self
            .api(namespace)
            .create(&PostParams::default(), &object)
            .await;
        match created {
            Err(kube::Error::Api(status))
                if regarding.namespace.is_none()
                    && namespace == CLUSTER_EVENTS
                    && status.code == 422 =>
            {
                self.cluster_in_kube_system.store(true, Ordering::Relaxed);
                self.api(CLUSTER_EVENTS_FALLBACK)
                    .create(&PostParams::default(), &object)
                    .await
                    .map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }
}

/// `<object name>.<time in hex>`, as kube and client-go name Events.
fn event_name(regarding: &ObjectReference, reporter: &Reporter, stamp: i128) -> String {
    let name: String = regarding
        .name
        .as_deref()
        .unwrap_or(&reporter.controller)
        .chars()
        .take(200)
        .collect();
    format!("{name}.{stamp:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: "TokenIssued".into(),
            note: Some(note.into()),
            action: "Issue".into(),
            secondary: None,
        }
    }

    fn object(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("ComputeIdentity".into()),
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    #[test]
    fn a_repeat_within_the_window_is_counted_and_anything_else_is_new() {
        let mut recent = Recent::default();
        let a = recent.key(&event("one"), &object("a"));
        assert!(recent.repeat(a, 100).is_none());
        recent.remember(a, 7, 100);
        let again = recent.repeat(a, 200).expect("a repeat");
        assert_eq!((again.stamp, again.count), (7, 2));
        assert_eq!(recent.repeat(a, 250).map(|s| s.count), Some(3));
        // Another note, another object: new Events.
        assert_ne!(recent.key(&event("two"), &object("a")), a);
        assert_ne!(recent.key(&event("one"), &object("b")), a);
        // Six minutes after it was last seen it is forgotten.
        assert!(recent.repeat(a, 250 + SERIES_WINDOW_SECONDS).is_none());
        assert!(recent.by_key.is_empty() && recent.order.is_empty());
    }

    #[test]
    fn what_is_remembered_is_bounded_and_the_least_recently_seen_goes_first() {
        let mut recent = Recent::default();
        for k in 0..MAX_RECENT as u64 {
            recent.remember(k, 1, 100);
        }
        // Key 0 is seen again, so key 1 is now the least recently seen.
        assert!(recent.repeat(0, 101).is_some());
        recent.remember(u64::MAX, 1, 102);
        assert_eq!(recent.by_key.len(), MAX_RECENT);
        assert!(recent.by_key.contains_key(&u64::MAX));
        assert!(recent.by_key.contains_key(&0), "seen recently, kept");
        assert!(
            !recent.by_key.contains_key(&1),
            "least recently seen, dropped"
        );
        // A burst far past the bound keeps the bound.
        for k in 10_000..30_000u64 {
            recent.remember(k, 1, 103);
        }
        assert_eq!(recent.by_key.len(), MAX_RECENT);
        assert_eq!(recent.order.len(), MAX_RECENT);
    }
}
