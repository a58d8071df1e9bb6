//! Which objects of a kind read a given Secret or depend on a given object.
//!
//! Kept up to date from the kind's own watch, so an event about a Secret, Workspace or credential
//! maps to the objects to reconcile by a lookup, not by a scan of every object of the kind.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::Reconciled;
use super::awaiting::key;

/// Something objects name: a Secret (`kind` "Secret") or an object of this API. `namespace` is
/// `None` for cluster-scoped objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// "Secret" or a kind of this API.
    pub kind: Cow<'static, str>,
    /// The target's namespace; `None` when cluster-scoped.
    pub namespace: Option<String>,
    /// The target's name.
    pub name: String,
}

impl Target {
    /// A Secret.
    pub fn secret(namespace: &str, name: &str) -> Self {
        Self {
            kind: "Secret".into(),
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// A namespace: its labels changed, or it joined or left this instance's shard.
    pub fn namespace(name: &str) -> Self {
        Self {
            kind: "Namespace".into(),
            namespace: None,
            name: name.into(),
        }
    }
}

/// The targets each object of kind `K` names, and the reverse.
pub struct ReferenceIndex<K: Reconciled> {
    /// Where cluster-scoped objects keep their Secrets.
    cluster_namespace: String,
    inner: Mutex<Inner<K>>,
}

struct Inner<K: Reconciled> {
    by_object: HashMap<ObjectRef<K>, Vec<Target>>,
    by_target: HashMap<Target, HashSet<ObjectRef<K>>>,
    /// Objects listed since the watch (re)started; the rest are gone once the listing is done.
    listed: Option<HashSet<ObjectRef<K>>>,
}

impl<K: Reconciled> ReferenceIndex<K> {
    /// An empty index; `cluster_namespace` is where cluster-scoped objects keep their Secrets.
    pub fn new(cluster_namespace: &str) -> Self {
        Self {
            cluster_namespace: cluster_namespace.into(),
            inner: Mutex::new(Inner {
                by_object: HashMap::new(),
                by_target: HashMap::new(),
                listed: None,
            }),
        }
    }

    /// Follows one event of the kind's watch.
    pub fn observe(&self, event: &watcher::Event<K>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(obj) => inner.set(obj, self.targets(obj)),
            watcher::Event::Delete(obj) => inner.remove(&key(obj)),
            watcher::Event::Init => inner.listed = Some(HashSet::new()),
            watcher::Event::InitApply(obj) => {
                if let Some(listed) = inner.listed.as_mut() {
                    listed.insert(key(obj));
                }
                inner.set(obj, self.targets(obj));
            }
            watcher::Event::InitDone => {
                if let Some(listed) = inner.listed.take() {
                    let gone: Vec<_> = inner
                        .by_object
                        .keys()
                        .filter(|o| !listed.contains(*o))
                        .cloned()
                        .collect();
                    for object in gone {
                        inner.remove(&object);
                    }
                }
            }
        }
    }

    /// The objects that name `target`.
    pub fn readers(&self, target: &Target) -> Vec<ObjectRef<K>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .by_target
            .get(target)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every object that names anything (when change events were missed).
    pub fn all_readers(&self) -> Vec<ObjectRef<K>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_object.keys().cloned().collect()
    }

    fn targets(&self, obj: &K) -> Vec<Target> {
        let namespace = obj.namespace();
        let secrets = obj
            .secrets(&self.cluster_namespace)
            .into_iter()
            .map(|(ns, name)| Target::secret(&ns, &name));
        let objects = obj.references().into_iter().map(|(kind, name)| Target {
            kind: kind.into(),
            // The one cluster-scoped kind an object can name.
            namespace: if kind == "ClusterAzureCredential" {
                None
            } else {
                namespace.clone()
            },
            name,
        });
        secrets.chain(objects).collect()
    }
}

impl<K: Reconciled> Inner<K> {
    fn set(&mut self, obj: &K, targets: Vec<Target>) {
        let object = key(obj);
        self.remove(&object);
        for target in &targets {
            self.by_target
                .entry(target.clone())
                .or_default()
                .insert(object.clone());
        }
        self.by_object.insert(object, targets);
    }

    fn remove(&mut self, object: &ObjectRef<K>) {
        for target in self.by_object.remove(object).unwrap_or_default() {
            if let Some(set) = self.by_target.get_mut(&target) {
                set.remove(object);
                if set.is_empty() {
                    self.by_target.remove(&target);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Datastore, Workspace};

    fn datastore(name: &str, workspace: &str, secret: &str) -> Datastore {
        let mut ds: Datastore =
            serde_yaml::from_str(include_str!("../../deploy/samples/datastore.yaml")).unwrap();
        ds.metadata.name = Some(name.into());
        ds.metadata.namespace = Some("team-a".into());
        ds.spec.workspace_ref.name = workspace.into();
        ds.spec
            .credentials
            .as_mut()
            .unwrap()
            .secret_ref
            .as_mut()
            .unwrap()
            .name = secret.into();
        ds
    }

    fn workspace(name: &str) -> Target {
        Target {
            kind: "Workspace".into(),
            namespace: Some("team-a".into()),
            name: name.into(),
        }
    }

    #[test]
    fn follows_applies_deletes_and_relists() {
        let index = ReferenceIndex::<Datastore>::new("operator");
        let (one, two) = (
            datastore("one", "ws", "key-1"),
            datastore("two", "ws", "key-2"),
        );
        index.observe(&watcher::Event::Apply(one.clone()));
        index.observe(&watcher::Event::Apply(two.clone()));
        assert_eq!(index.readers(&workspace("ws")).len(), 2);
        assert_eq!(
            index.readers(&Target::secret("team-a", "key-1")),
            vec![ObjectRef::from_obj(&one)]
        );
        assert!(index.readers(&Target::secret("team-b", "key-1")).is_empty());

        // An edit that names another Secret moves the object.
        index.observe(&watcher::Event::Apply(datastore("one", "ws", "key-3")));
        assert!(index.readers(&Target::secret("team-a", "key-1")).is_empty());
        assert_eq!(index.readers(&Target::secret("team-a", "key-3")).len(), 1);

        index.observe(&watcher::Event::Delete(two.clone()));
        assert_eq!(index.readers(&workspace("ws")).len(), 1);

        // A relist that no longer shows an object forgets it.
        index.observe(&watcher::Event::Apply(two.clone()));
        index.observe(&watcher::Event::Init);
        index.observe(&watcher::Event::InitApply(two.clone()));
        index.observe(&watcher::Event::InitDone);
        assert_eq!(
            index.readers(&workspace("ws")),
            vec![ObjectRef::from_obj(&two)]
        );
        assert_eq!(index.all_readers(), vec![ObjectRef::from_obj(&two)]);
    }

    #[test]
    fn a_cluster_credential_is_named_from_any_namespace() {
        let index = ReferenceIndex::<Workspace>::new("operator");
        let mut ws: Workspace =
            serde_yaml::from_str(include_str!("../../deploy/samples/workspace.yaml")).unwrap();
        ws.metadata.namespace = Some("team-b".into());
        ws.spec.credential_ref.kind = crate::api::CredentialKind::ClusterAzureCredential;
        ws.spec.credential_ref.name = "shared".into();
        index.observe(&watcher::Event::Apply(ws.clone()));
        let shared = Target {
            kind: "ClusterAzureCredential".into(),
            namespace: None,
            name: "shared".into(),
        };
        assert_eq!(index.readers(&shared), vec![ObjectRef::from_obj(&ws)]);
    }
}
