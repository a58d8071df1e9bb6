//! One watch per kind the controllers read but do not own — Workspaces and both credential kinds in
//! full, Secrets as metadata — instead of one per controller. Each event is applied to a store the
//! reconcilers read instead of asking the API server, and only then sent to every controller, so a
//! reconcile a change triggers reads that change or a newer one (never the version before it).
//!
//! Namespaces are watched as metadata too (cluster-wide instances only): their labels decide
//! admission to ClusterAzureCredentials, and, with `--namespace-selector`, which instance reconciles
//! a namespace's objects (a second watch, filtered by the API server, so its store holds exactly the
//! namespaces of this shard). A namespace whose labels change, or that joins or leaves the shard,
//! reconciles the objects in it at once.
//!
//! The stores live while this instance leads; a lookup that misses (not listed yet, or gone) asks
//! the API server, which is what decides that something does not exist.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ListParams, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::index::Target;
use super::{Context, Scope, namespaced_or_all};
use crate::api::{AzureCredential, ClusterAzureCredential, Workspace};

/// How long a reconcile waits for the shard's first listing before asking the API server.
const SHARD_LISTING: std::time::Duration = std::time::Duration::from_secs(10);

/// What the reconcilers read from the shared watches.
#[derive(Clone)]
pub struct Stores {
    workspaces: Store<Workspace>,
    credentials: Store<AzureCredential>,
    cluster_credentials: Store<ClusterAzureCredential>,
    /// Every namespace (cluster-wide instances only).
    namespaces: Option<Store<PartialObjectMeta<Namespace>>>,
    /// The namespaces `--namespace-selector` picks, as the API server matched them.
    shard: Option<Store<PartialObjectMeta<Namespace>>>,
}

impl Context {
    fn stores(&self) -> Option<Stores> {
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The Workspace `namespace`/`name`, from the shared watch when it has it.
    pub async fn workspace(&self, namespace: &str, name: &str) -> kube::Result<Option<Workspace>> {
        let store = self.stores().map(|s| s.workspaces);
        let api = Api::namespaced(self.client.clone(), namespace);
        cached_or_get(store, ObjectRef::new(name).within(namespace), api).await
    }

    /// The AzureCredential `namespace`/`name`, from the shared watch when it has it.
    pub async fn azure_credential(
        &self,
        namespace: &str,
        name: &str,
    ) -> kube::Result<Option<AzureCredential>> {
        let store = self.stores().map(|s| s.credentials);
        let api = Api::namespaced(self.client.clone(), namespace);
        cached_or_get(store, ObjectRef::new(name).within(namespace), api).await
    }

    /// The ClusterAzureCredential `name`, from the shared watch when it has it.
    pub async fn cluster_credential(
        &self,
        name: &str,
    ) -> kube::Result<Option<ClusterAzureCredential>> {
        let store = self.stores().map(|s| s.cluster_credentials);
        let api = Api::all(self.client.clone());
        cached_or_get(store, ObjectRef::new(name), api).await
    }

    /// The labels of namespace `name` (none when it does not exist), from the shared watch when it
    /// has it.
    pub async fn namespace_labels(&self, name: &str) -> kube::Result<BTreeMap<String, String>> {
        let store = self.stores().and_then(|s| s.namespaces);
        if let Some(found) = store.and_then(|s| s.get(&ObjectRef::new(name))) {
            return Ok(found.metadata.labels.clone().unwrap_or_default());
        }
        Ok(Api::<Namespace>::all(self.client.clone())
            .get_metadata_opt(name)
            .await?
            .and_then(|n| n.metadata.labels)
            .unwrap_or_default())
    }

    /// Whether this instance reconciles the objects of `namespace`: always without
    /// `--namespace-selector`; with it, when the API server says the namespace matches.
    pub async fn in_shard(&self, namespace: &str) -> kube::Result<bool> {
        let Some(selector) = &self.namespace_selector else {
            return Ok(true);
        };
        // Right after start the shard's watch is listing: wait for it (briefly) rather than ask
        // the API server once per object.
        if let Some(shard) = self.stores().and_then(|s| s.shard)
            && tokio::time::timeout(SHARD_LISTING, shard.wait_until_ready())
                .await
                .is_ok_and(|r| r.is_ok())
        {
            return Ok(shard.get(&ObjectRef::new(namespace)).is_some());
        }
        // The shard's watch has not listed (yet): the API server matches this one namespace.
        let params = ListParams::default()
            .labels(selector)
            .fields(&format!("metadata.name={namespace}"));
        let matched = Api::<Namespace>::all(self.client.clone())
            .list_metadata(&params)
            .await?;
        Ok(!matched.items.is_empty())
    }
}

/// `object` from `store` when it holds it; otherwise from the API server, which decides that
/// something does not exist.
async fn cached_or_get<K>(
    store: Option<Store<K>>,
    object: ObjectRef<K>,
    api: Api<K>,
) -> kube::Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    match store.and_then(|s| s.get(&object)) {
        Some(found) => Ok(Some((*found).clone())),
        None => api.get_opt(&object.name).await,
    }
}

/// Watches `api` into a store; after each change is stored, sends its [`Target`] to `ctx.changes`.
async fn watch_into<K>(ctx: Arc<Context>, api: Api<K>, writer: reflector::store::Writer<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|obj: &mut K| {
            obj.meta_mut().managed_fields = None;
            if let Some(annotations) = &mut obj.meta_mut().annotations {
                annotations.remove(super::LAST_APPLIED);
            }
        })
        .reflect(writer)
        .touched_objects();
    futures::pin_mut!(stream);
    while let Some(next) = stream.next().await {
        match next {
            Ok(obj) => {
                let _ = ctx.changes.send(Target {
                    kind: kind.clone(),
                    namespace: obj.namespace(),
                    name: obj.name_any(),
                });
            }
            Err(e) => tracing::debug!(error = %e, kind = %kind, "watching"),
        }
    }
}

/// Namespaces through `config` into a store; after the first listing, each namespace whose
/// `fingerprint` changes (or that appears or goes) is sent to `ctx.changes` as a `Namespace` target,
/// so the controllers reconcile the objects in it. Relists compare against what was known.
async fn watch_namespaces(
    ctx: Arc<Context>,
    config: watcher::Config,
    writer: reflector::store::Writer<PartialObjectMeta<Namespace>>,
    fingerprint: fn(&PartialObjectMeta<Namespace>) -> Option<BTreeMap<String, String>>,
) {
    let api = Api::<PartialObjectMeta<Namespace>>::all(ctx.client.clone());
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|ns| ns.metadata.managed_fields = None)
        .reflect(writer);
    futures::pin_mut!(stream);
    let mut known: HashMap<String, Option<BTreeMap<String, String>>> = HashMap::new();
    let mut listing: Option<HashMap<String, Option<BTreeMap<String, String>>>> = None;
    let mut listed_once = false;
    let send = |name: &str| {
        let _ = ctx.changes.send(Target::namespace(name));
    };
    while let Some(next) = stream.next().await {
        match next {
            Ok(watcher::Event::Apply(ns)) => {
                let (name, print) = (ns.name_any(), fingerprint(&ns));
                if known.get(&name) != Some(&print) {
                    known.insert(name.clone(), print);
                    send(&name);
                }
            }
            Ok(watcher::Event::Delete(ns)) => {
                if known.remove(&ns.name_any()).is_some() {
                    send(&ns.name_any());
                }
            }
            Ok(watcher::Event::Init) => listing = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(ns)) => {
                if let Some(listing) = listing.as_mut() {
                    listing.insert(ns.name_any(), fingerprint(&ns));
                }
            }
            Ok(watcher::Event::InitDone) => {
                let Some(listed) = listing.take() else {
                    continue;
                };
                if listed_once {
                    let changed: Vec<&String> = listed
                        .iter()
                        .filter(|(name, print)| known.get(*name) != Some(print))
                        .map(|(name, _)| name)
                        .chain(known.keys().filter(|name| !listed.contains_key(*name)))
                        .collect();
                    changed.into_iter().for_each(|name| send(name));
                }
                known = listed;
                listed_once = true;
            }
            Err(e) => tracing::debug!(error = %e, "watching Namespaces"),
        }
    }
}

/// Every Secret in scope, metadata only (their data is never read, none of them is held): each
/// change goes to `ctx.changes`, after the input Secret kept for it (if any) is dropped. While the
/// watch is down or relisting, nothing kept is served.
async fn watch_secrets(
    ctx: Arc<Context>,
    api: Api<PartialObjectMeta<Secret>>,
    scope: Option<String>,
) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(next) = stream.next().await {
        match next {
            Ok(watcher::Event::Init) => ctx.input_secrets.relisting(),
            Ok(watcher::Event::InitDone) => ctx.input_secrets.listed(scope.as_deref()),
            Ok(
                watcher::Event::Apply(secret)
                | watcher::Event::InitApply(secret)
                | watcher::Event::Delete(secret),
            ) => {
                let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
                ctx.input_secrets.changed(&namespace, &name);
                let _ = ctx.changes.send(Target::secret(&namespace, &name));
                output_changed(&ctx, &secret, &namespace, &name);
            }
            Err(e) => {
                ctx.input_secrets.relisting();
                tracing::debug!(error = %e, "watching Secrets");
            }
        }
    }
}

/// A Secret the operator wrote (its label, a controller reference) that changed: its owner is
/// told, unless the change is the echo of the operator's own write.
fn output_changed(ctx: &Context, secret: &PartialObjectMeta<Secret>, namespace: &str, name: &str) {
    let managed = secret
        .labels()
        .get(crate::outputs::MANAGED_BY.0)
        .is_some_and(|v| v == crate::outputs::MANAGED_BY.1);
    let Some(owner) = secret
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
    else {
        return;
    };
    if !managed
        || ctx.own_writes.is_echo(
            "Secret",
            namespace,
            name,
            super::own_writes::fingerprint(secret.annotations()),
        )
    {
        return;
    }
    let _ =
        ctx.outputs_changed
            .send((owner.kind.clone(), namespace.to_owned(), owner.name.clone()));
}

/// Runs the shared watches, with their stores in `ctx`, until `stop` turns true; the stores go
/// with them (a follower asks the API server).
pub async fn run(ctx: Arc<Context>, scope: Scope, mut stop: tokio::sync::watch::Receiver<bool>) {
    let (workspaces, workspace_writer) = reflector::store();
    let (credentials, credential_writer) = reflector::store();
    let (cluster_credentials, cluster_credential_writer) = reflector::store();
    // A namespace-scoped instance may only read its own namespace: it asks for its labels instead.
    let cluster_wide = scope.namespace.is_none();
    let (namespaces, namespace_writer) = reflector::store();
    let (shard, shard_writer) = reflector::store();
    let selector = ctx.namespace_selector.clone().filter(|_| cluster_wide);
    *ctx.stores.write().unwrap_or_else(|e| e.into_inner()) = Some(Stores {
        workspaces,
        credentials,
        cluster_credentials,
        namespaces: cluster_wide.then_some(namespaces),
        shard: selector.is_some().then_some(shard),
    });
    let namespace_watches = async {
        if !cluster_wide {
            return;
        }
        // Admission reads labels: a label change is a reason to look again.
        let labels = watch_namespaces(
            ctx.clone(),
            watcher::Config::default(),
            namespace_writer,
            |ns| ns.metadata.labels.clone(),
        );
        match &selector {
            // Joining or leaving the shard is the change; the API server decides membership.
            Some(selector) => {
                let shard = watch_namespaces(
                    ctx.clone(),
                    watcher::Config::default().labels(selector),
                    shard_writer,
                    |_| None,
                );
                futures::future::join(labels, shard).await;
            }
            None => labels.await,
        }
    };
    let watches = futures::future::join4(
        watch_into(
            ctx.clone(),
            namespaced_or_all::<Workspace>(&ctx.client, &scope),
            workspace_writer,
        ),
        watch_into(
            ctx.clone(),
            namespaced_or_all::<AzureCredential>(&ctx.client, &scope),
            credential_writer,
        ),
        watch_into(
            ctx.clone(),
            Api::<ClusterAzureCredential>::all(ctx.client.clone()),
            cluster_credential_writer,
        ),
        futures::future::join(
            watch_secrets(
                ctx.clone(),
                namespaced_or_all(&ctx.client, &scope),
                scope.namespace.clone(),
            ),
            namespace_watches,
        ),
    );
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = watches => {}
    }
    *ctx.stores.write().unwrap_or_else(|e| e.into_inner()) = None;
    ctx.input_secrets.relisting();
}
