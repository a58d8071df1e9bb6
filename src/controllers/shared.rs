//! One watch per kind the controllers read but do not own — Workspaces and both credential kinds in
//! full, Secrets as metadata — instead of one per controller. Each event is applied to a store the
//! reconcilers read instead of asking the API server, and only then sent to every controller, so a
//! reconcile a change triggers reads that change or a newer one (never the version before it).
//!
//! The stores live while this instance leads; a lookup that misses (not listed yet, or gone) asks
//! the API server, which is what decides that something does not exist.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::index::Target;
use super::{Context, Scope, namespaced_or_all};
use crate::api::{AzureCredential, ClusterAzureCredential, Workspace};

/// What the reconcilers read from the shared watches.
#[derive(Clone)]
pub struct Stores {
    workspaces: Store<Workspace>,
    credentials: Store<AzureCredential>,
    cluster_credentials: Store<ClusterAzureCredential>,
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
    let kind = K::kind(&()).into_owned();
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

/// Every Secret in scope, metadata only (their data is never read, none of them is held): each
/// change goes to `ctx.changes`.
async fn watch_secrets(ctx: Arc<Context>, api: Api<PartialObjectMeta<Secret>>) {
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects();
    futures::pin_mut!(stream);
    while let Some(next) = stream.next().await {
        match next {
            Ok(secret) => {
                let _ = ctx.changes.send(Target::secret(
                    &secret.namespace().unwrap_or_default(),
                    &secret.name_any(),
                ));
            }
            Err(e) => tracing::debug!(error = %e, "watching Secrets"),
        }
    }
}

/// Runs the shared watches, with their stores in `ctx`, until `stop` turns true; the stores go
/// with them (a follower asks the API server).
pub async fn run(ctx: Arc<Context>, scope: Scope, mut stop: tokio::sync::watch::Receiver<bool>) {
    let (workspaces, workspace_writer) = reflector::store();
    let (credentials, credential_writer) = reflector::store();
    let (cluster_credentials, cluster_credential_writer) = reflector::store();
    *ctx.stores.write().unwrap_or_else(|e| e.into_inner()) = Some(Stores {
        workspaces,
        credentials,
        cluster_credentials,
    });
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
        watch_secrets(ctx.clone(), namespaced_or_all(&ctx.client, &scope)),
    );
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = watches => {}
    }
    *ctx.stores.write().unwrap_or_else(|e| e.into_inner()) = None;
}
