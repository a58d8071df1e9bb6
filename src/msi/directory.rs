//! Which ComputeIdentity a presented secret belongs to: every object that opted in
//! (`tokenSecret.msiEndpoint`), indexed by the digest of its current `MSI_SECRET`, kept from a
//! watch every replica runs. A deleted object, one being deleted, or one whose force-refresh
//! rotated its secret leaves the index on its watch event, so its old secret stops working at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::key::{EndpointKey, digest_of, same};
use crate::api::ComputeIdentity;

type Name = (String, String);

#[derive(Default)]
struct Index {
    by_digest: HashMap<[u8; 32], Name>,
    objects: HashMap<Name, (Arc<ComputeIdentity>, String)>,
}

impl Index {
    fn put(&mut self, key: &EndpointKey, ci: ComputeIdentity) {
        let name = (ci.namespace().unwrap_or_default(), ci.name_any());
        self.remove(&name);
        let serves = ci
            .spec
            .token_secret
            .as_ref()
            .is_some_and(|t| t.msi_endpoint)
            && ci.meta().deletion_timestamp.is_none();
        if serves {
            let secret = key.secret_of(&ci);
            self.by_digest.insert(digest_of(&secret), name.clone());
            self.objects.insert(name, (Arc::new(ci), secret));
        }
    }

    fn remove(&mut self, name: &Name) {
        if let Some((_, secret)) = self.objects.remove(name) {
            self.by_digest.remove(&digest_of(&secret));
        }
    }
}

/// The opted-in ComputeIdentities, by secret.
pub struct Directory {
    key: Arc<EndpointKey>,
    index: RwLock<Index>,
    /// Set once the first full list is in.
    pub synced: Arc<AtomicBool>,
}

impl Directory {
    /// An empty directory deriving secrets with `key`.
    pub fn new(key: Arc<EndpointKey>) -> Self {
        Self {
            key,
            index: RwLock::default(),
            synced: Arc::default(),
        }
    }

    /// The ComputeIdentity `secret` belongs to, if any.
    pub fn find(&self, secret: &str) -> Option<Arc<ComputeIdentity>> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let name = index.by_digest.get(&digest_of(secret))?;
        let (ci, expected) = index.objects.get(name)?;
        same(expected, secret).then(|| ci.clone())
    }

    /// Opted-in objects known.
    pub fn len(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .objects
            .len()
    }

    /// Whether no object opted in.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the directory from a watch of ComputeIdentities in `namespace` (`None`: all) matching
    /// `labels`, until the stream ends (never, but for shutdown).
    pub async fn watch(&self, client: Client, namespace: Option<&str>, labels: Option<&str>) {
        let api = match namespace {
            Some(ns) => Api::<ComputeIdentity>::namespaced(client, ns),
            None => Api::<ComputeIdentity>::all(client),
        };
        let mut config = watcher::Config::default();
        if let Some(labels) = labels {
            config = config.labels(labels);
        }
        let mut events = watcher(api, config).default_backoff().boxed();
        let mut relist: Option<Index> = None;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "watching ComputeIdentities for the managed identity endpoint");
                    continue;
                }
            };
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            match event {
                watcher::Event::Init => relist = Some(Index::default()),
                watcher::Event::InitApply(ci) => {
                    relist.get_or_insert_with(Index::default).put(&self.key, ci)
                }
                watcher::Event::InitDone => {
                    *index = relist.take().unwrap_or_default();
                    self.synced.store(true, Ordering::Relaxed);
                }
                watcher::Event::Apply(ci) => index.put(&self.key, ci),
                watcher::Event::Delete(ci) => {
                    index.remove(&(ci.namespace().unwrap_or_default(), ci.name_any()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci(ns: &str, name: &str, uid: &str, serves: bool, force: Option<&str>) -> ComputeIdentity {
        let mut annotations = serde_json::Map::new();
        if let Some(f) = force {
            annotations.insert("amlidentity.io/force-refresh".into(), f.into());
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "amlidentity.io/v1alpha1", "kind": "ComputeIdentity",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "annotations": annotations},
            "spec": {
                "workspaceRef": {"name": "ws"}, "computeName": "cpu",
                "identity": {"type": "UserAssigned", "userAssignedIdentities": ["/subscriptions/s/resourceGroups/r/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i"]},
                "federation": {"serviceAccounts": ["training"]},
                "tokenSecret": {"name": "t", "audiences": ["https://storage.azure.com"], "msiEndpoint": serves},
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_secret_finds_its_object_only_while_it_serves() {
        let key = Arc::new(EndpointKey::from_bytes(&[3u8; 32]).unwrap());
        let dir = Directory::new(key.clone());
        let a = ci("team-a", "cpu", "uid-a", true, None);
        let secret_a = key.secret_of(&a);
        dir.index.write().unwrap().put(&key, a);
        dir.index
            .write()
            .unwrap()
            .put(&key, ci("team-b", "cpu", "uid-b", false, None));
        assert_eq!(
            dir.find(&secret_a).unwrap().namespace().as_deref(),
            Some("team-a")
        );
        assert!(dir.find(&key.secret("uid-b", "")).is_none(), "not opted in");
        assert!(dir.find("guess").is_none());
        assert_eq!(dir.len(), 1);

        // A force-refresh rotates: the old secret stops working, the new one works.
        let rotated = ci("team-a", "cpu", "uid-a", true, Some("1"));
        let secret_rotated = key.secret_of(&rotated);
        dir.index.write().unwrap().put(&key, rotated);
        assert!(dir.find(&secret_a).is_none());
        assert!(dir.find(&secret_rotated).is_some());

        // Turning the endpoint off, or deleting, removes it.
        dir.index
            .write()
            .unwrap()
            .put(&key, ci("team-a", "cpu", "uid-a", false, Some("1")));
        assert!(dir.find(&secret_rotated).is_none());
        assert!(dir.is_empty());
    }
}
