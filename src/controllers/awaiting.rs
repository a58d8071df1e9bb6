//! What each controller keeps of its objects between passes: only their names (a metadata store the
//! controller schedules from), not the objects. Keeping every object whole cost about 4 KB each
//! (heaptrack at 4,000 objects: the object, its labels map and its conditions; the largest part
//! of the operator's memory). A pass reads its object from the API server, unless the watch just
//! delivered a new object that asks for one: a few of those are kept here until their pass takes
//! them, so a burst of new objects costs no read each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::api::{ObjectMeta, PartialObjectMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::Reconciled;

/// New objects kept for their first pass at most (past it, a pass reads its object). New objects
/// have no status yet: about 1.5 KB each.
pub const MAX_AWAITING: usize = 2048;

/// The name an object is scheduled by: its name and namespace, nothing else.
pub fn name_of<K: Reconciled>(obj: &K) -> PartialObjectMeta<K> {
    let meta = obj.meta();
    PartialObjectMeta {
        types: None,
        metadata: ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            ..Default::default()
        },
        _phantom: Default::default(),
    }
}

/// A watch event as the metadata store takes it.
pub fn names_of<K: Reconciled>(event: &watcher::Event<K>) -> watcher::Event<PartialObjectMeta<K>> {
    match event {
        watcher::Event::Apply(obj) => watcher::Event::Apply(name_of(obj)),
        watcher::Event::Delete(obj) => watcher::Event::Delete(name_of(obj)),
        watcher::Event::InitApply(obj) => watcher::Event::InitApply(name_of(obj)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// The reference to `name` (in `namespace`), by name and namespace only.
pub fn reference<R: kube::Resource<DynamicType = ()>>(
    namespace: Option<&str>,
    name: &str,
) -> ObjectRef<R> {
    let object = ObjectRef::new(name);
    match namespace {
        Some(ns) => object.within(ns),
        None => object,
    }
}

/// `obj`'s reference by name and namespace only (`ObjectRef::from_obj` also copies its uid and
/// resourceVersion, which no comparison uses).
pub fn key<K: Reconciled>(obj: &K) -> ObjectRef<K> {
    reference(
        obj.meta().namespace.as_deref(),
        obj.meta().name.as_deref().unwrap_or_default(),
    )
}

/// New objects whose first pass has not taken them yet.
pub struct Awaiting<K: Reconciled> {
    objects: Mutex<HashMap<ObjectRef<K>, Arc<K>>>,
}

impl<K: Reconciled> Default for Awaiting<K> {
    fn default() -> Self {
        Self {
            objects: Default::default(),
        }
    }
}

impl<K: Reconciled> Awaiting<K> {
    /// Follows the watch: a kept object is replaced by each newer version (so its pass sees the
    /// latest), and dropped when it is deleted.
    pub fn observe(&self, event: &watcher::Event<K>) {
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                if let Some(kept) = objects.get_mut(&key(obj)) {
                    *kept = Arc::new(obj.clone());
                }
            }
            watcher::Event::Delete(obj) => {
                objects.remove(&key(obj));
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    /// `obj` changed so that it needs a pass: kept for it when it is new (no status) and there is
    /// room.
    pub fn keep(&self, obj: &K) {
        if obj.status().is_some() {
            return;
        }
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        if objects.len() < MAX_AWAITING || objects.contains_key(&key(obj)) {
            objects.insert(key(obj), Arc::new(obj.clone()));
        }
    }

    /// The object `name` (in `namespace`) for its pass, when it is kept.
    pub fn take(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&reference(namespace, name))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.objects.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Datastore;

    fn datastore(name: &str, generation: i64) -> Datastore {
        let mut ds: Datastore =
            serde_yaml::from_str(include_str!("../../deploy/samples/datastore.yaml")).unwrap();
        ds.metadata.name = Some(name.into());
        ds.metadata.namespace = Some("team-a".into());
        ds.metadata.generation = Some(generation);
        ds
    }

    #[test]
    fn a_new_object_waits_for_its_pass_in_its_latest_version() {
        let awaiting = Awaiting::<Datastore>::default();
        awaiting.keep(&datastore("a", 1));
        awaiting.observe(&watcher::Event::Apply(datastore("a", 2)));
        awaiting.observe(&watcher::Event::Apply(datastore("b", 1)));
        let taken = awaiting.take(Some("team-a"), "a").expect("kept");
        assert_eq!(taken.metadata.generation, Some(2));
        assert!(awaiting.take(Some("team-a"), "a").is_none(), "taken once");
        assert!(
            awaiting.take(Some("team-a"), "b").is_none(),
            "never asked for"
        );
        assert!(awaiting.take(Some("team-b"), "a").is_none());
    }

    #[test]
    fn objects_with_a_status_deleted_ones_and_those_past_the_bound_are_read_instead() {
        let awaiting = Awaiting::<Datastore>::default();
        let mut settled = datastore("settled", 1);
        settled.status = Some(Default::default());
        awaiting.keep(&settled);
        assert!(awaiting.take(Some("team-a"), "settled").is_none());
        awaiting.keep(&datastore("gone", 1));
        awaiting.observe(&watcher::Event::Delete(datastore("gone", 1)));
        assert!(awaiting.take(Some("team-a"), "gone").is_none());
        for i in 0..MAX_AWAITING + 10 {
            awaiting.keep(&datastore(&format!("n{i}"), 1));
        }
        assert_eq!(awaiting.len(), MAX_AWAITING);
    }

    #[test]
    fn the_scheduling_name_keeps_nothing_but_the_name() {
        let mut ds = datastore("a", 3);
        ds.metadata.labels = Some([("team".to_owned(), "a".to_owned())].into());
        let name = name_of(&ds);
        assert_eq!(name.metadata.name.as_deref(), Some("a"));
        assert_eq!(name.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(name.metadata.labels, None);
        assert_eq!(name.metadata.generation, None);
    }
}
