//! One controller per kind, all with the same reconciler shape: validate first, then the kind's
//! behaviour, then the status; the finalizer is added before any Azure write and removed on delete.

mod awaiting;
mod backoff;
pub mod compute_identity;
mod conditions;
pub mod credentials;
pub mod datastore;
pub mod events;
mod expiring;
mod failures;
pub mod federation;
mod in_use;
mod index;
mod input_secrets;
mod kinds;
pub mod ledger;
mod own_writes;
pub mod registry_connection;
pub mod resolve;
mod revocation;
mod shared;
mod vault_access;
pub mod workspace;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PartialObjectMeta};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::conditions::Reason;
use crate::api::{AzureResource, HasCommonStatus, Validate, Violation};
use crate::azure::arm::Budget;
use crate::azure::{TokenCache, Transport};
use crate::metrics::{ErrorLabels, Metrics};
pub use conditions::{Outcome, READY};

/// Finalizer the operator puts on objects whose behaviour may create something in Azure.
pub const FINALIZER: &str = "amlidentity.io/finalizer";
/// The longest one reconcile of one object may take.
pub const RECONCILE_DEADLINE: Duration = Duration::from_secs(360);
/// Field manager and Event reporter name.
pub const MANAGER: &str = "aml-identity-operator";

/// How the operator reaches Azure, shared by every controller.
#[derive(Clone)]
pub struct AzureSettings {
    /// Extra CA and host overrides (an emulator under the real host names).
    pub transport: Transport,
    /// IMDS base URL for managed-identity credentials.
    pub imds_endpoint: String,
    /// Where a ClusterAzureCredential's Secrets and ServiceAccounts live (the operator's namespace).
    pub cluster_resource_namespace: String,
    /// One token per (credential, client, audience) per lifetime, across all objects.
    pub tokens: Arc<TokenCache>,
    /// Client-side ARM request budget per subscription.
    pub budget: Arc<Budget>,
    /// Recent ARM reads of shared resources (identities, federated credentials), per credential.
    pub reads: Arc<crate::azure::read_cache::ReadCache>,
    /// Blob endpoint for an account, with `{account}` (default
    /// `https://{account}.blob.<storage suffix>`); path-style endpoints such as Azurite's need it.
    pub blob_url_template: Option<String>,
    /// File endpoint for an account, with `{account}` (default
    /// `https://{account}.file.<storage suffix>`).
    pub file_url_template: Option<String>,
    /// The Azure CLI program for `azureCli` credentials.
    pub azure_cli: std::path::PathBuf,
    /// Hosts (and their subdomains) a namespaced credential's `Custom` cloud may name.
    pub allowed_custom_cloud_hosts: Vec<String>,
}

impl AzureSettings {
    /// Settings with a fresh token cache and budget.
    pub fn new(
        transport: Transport,
        imds_endpoint: impl Into<String>,
        cluster_resource_namespace: impl Into<String>,
    ) -> Self {
        Self::with_clock_offset(transport, imds_endpoint, cluster_resource_namespace, 0)
    }

    /// Settings whose clock runs `offset` seconds from real time (tests of expiry and renewal).
    pub fn with_clock_offset(
        transport: Transport,
        imds_endpoint: impl Into<String>,
        cluster_resource_namespace: impl Into<String>,
        offset: i64,
    ) -> Self {
        Self {
            transport,
            imds_endpoint: imds_endpoint.into(),
            cluster_resource_namespace: cluster_resource_namespace.into(),
            tokens: Arc::new(TokenCache::with_clock(Arc::new(move || {
                jiff::Timestamp::now().as_second() + offset
            }))),
            budget: Arc::new(Budget::default()),
            reads: Default::default(),
            blob_url_template: None,
            file_url_template: None,
            azure_cli: "az".into(),
            allowed_custom_cloud_hosts: Vec::new(),
        }
    }
}

/// Shared by every controller.
pub struct Context {
    /// Client of the API server.
    pub client: Client,
    /// Publishes Events on the reconciled objects.
    pub events: events::Events,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// How Azure is reached.
    pub azure: AzureSettings,
    /// The namespace this instance watches (`None`: all), where holders and dependents are looked
    /// up.
    pub watch_namespace: Option<String>,
    /// `--namespace-selector`: only objects in namespaces whose labels match it are reconciled
    /// here (another instance takes the rest).
    pub namespace_selector: Option<String>,
    /// Failed cleanup attempts after which a deleted object is let go (with a Warning Event).
    pub cleanup_attempts: i64,
    /// Where token Secrets point pods for the managed identity endpoint, and the key their
    /// `MSI_SECRET`s derive from (`None`: this operator does not serve it).
    pub msi: Option<crate::msi::Issuer>,
    /// Consecutive failures per object, for growing retry intervals.
    backoff: backoff::Backoff,
    /// The operator's own writes, so their watch events do not trigger another reconcile.
    pub(crate) own_writes: own_writes::OwnWrites,
    /// (kind, namespace, name) of objects a dependent just let go of: a Workspace or credential
    /// waiting for its dependents is reconciled at once instead of at its next poll.
    released: tokio::sync::broadcast::Sender<(String, Option<String>, String)>,
    /// Each Secret, Workspace and credential in scope that changed, from one watch per kind shared
    /// by every controller (`shared.rs`), sent once its store holds the change.
    changes: tokio::sync::broadcast::Sender<index::Target>,
    /// (kind, namespace, name) of objects whose output Secret someone else changed or deleted,
    /// from the same shared Secret watch (one watch for every controller, not one each).
    outputs_changed: tokio::sync::broadcast::Sender<(String, String, String)>,
    /// The shared watches' stores, while this instance leads.
    stores: std::sync::RwLock<Option<shared::Stores>>,
    /// Credential and account-key Secrets read, kept while the shared Secret watch runs.
    pub(crate) input_secrets: input_secrets::InputSecrets,
    issuer: tokio::sync::OnceCell<String>,
}

impl Context {
    /// A context for `client`; `instance` tells Events of several operator processes apart.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        instance: Option<String>,
        azure: AzureSettings,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance,
        };
        Self {
            events: events::Events::new(client.clone(), reporter),
            client,
            metrics,
            azure,
            watch_namespace: None,
            namespace_selector: None,
            cleanup_attempts: 8,
            msi: None,
            backoff: Default::default(),
            own_writes: Default::default(),
            released: tokio::sync::broadcast::channel(1024).0,
            changes: tokio::sync::broadcast::channel(8192).0,
            outputs_changed: tokio::sync::broadcast::channel(8192).0,
            stores: Default::default(),
            input_secrets: Default::default(),
            issuer: Default::default(),
        }
    }

    /// The cluster's service-account issuer (what federated identity credentials must name), read
    /// once from the API server's OIDC discovery document.
    pub async fn issuer(&self) -> Result<String, Error> {
        self.issuer
            .get_or_try_init(|| async {
                let request = http::Request::get("/.well-known/openid-configuration")
                    .body(Vec::new())
                    .map_err(|e| Error::Azure(e.to_string()))?;
                let text = self.client.request_text(request).await?;
                let doc: serde_json::Value = serde_json::from_str(&text)?;
                doc["issuer"].as_str().map(str::to_owned).ok_or_else(|| {
                    Error::Azure("the API server's discovery document names no issuer".into())
                })
            })
            .await
            .cloned()
    }
}

/// Why a reconciliation failed (never carries a secret: Kubernetes API errors only).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Serializing a status or patch failed.
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    /// A transient Azure failure during cleanup (retried).
    #[error("Azure: {0}")]
    Azure(String),
}

impl Error {
    /// Metric and Event reason for the error (a short, bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::Serialization(_) => "SerializationError",
            Error::Azure(_) => "AzureError",
        }
    }
}

/// Where an object's cleanup stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing is left to do: the finalizer may go.
    Done,
    /// Others must finish first (dependents still cleaning up); why, for the log.
    Waiting(String),
}

/// What the shared reconciler needs from a kind.
pub trait Reconciled:
    Resource<DynamicType = ()>
    + Validate
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind's status type.
    type Status: HasCommonStatus + Serialize;
    /// Every condition type the kind reports, in order, `Ready` last.
    const CONDITIONS: &'static [crate::api::conditions::ConditionType];
    /// The current status, if any.
    fn status(&self) -> Option<&Self::Status>;
    /// Api for objects of this kind in `namespace` (ignored for cluster-scoped kinds; `None` = all).
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    /// Secrets (namespace, name) whose change should reconcile this object again (rotated client
    /// secrets and account keys). `cluster_namespace` is where cluster-scoped objects keep theirs.
    fn secrets(&self, _cluster_namespace: &str) -> Vec<(String, String)> {
        Vec::new()
    }
    /// The objects of this API (kind, name, in the same namespace) this object depends on, so
    /// that a change to one of them reconciles this one again.
    fn references(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Whether this kind reads ComputeIdentities it references (their identity and status), so a
    /// change to one must reconcile it at once rather than at its next retry.
    const READS_COMPUTE_IDENTITIES: bool = false;
    /// Whether this kind writes ConfigMaps (only a Workspace's `config.json`): only then does its
    /// controller watch them.
    const WRITES_CONFIG_MAPS: bool = false;
    /// What the operator made or holds in Azure for this object (`status.azureResources`).
    fn record(&self) -> &[AzureResource] {
        &[]
    }
    /// Removes what the operator created in Azure before the finalizer goes.
    fn cleanup<'a>(&'a self, _ctx: &'a Context) -> BoxFuture<'a, Result<Cleanup, Error>> {
        Box::pin(async { Ok(Cleanup::Done) })
    }
    /// The kind's behaviour for a valid spec.
    fn behaviour<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Outcome, Error>>;
}

/// Reconciles one object: the shape every kind shares.
/// Writes what `outcome` says into `obj`'s status, only if that changes something; whether it did.
async fn write_status<K: Reconciled>(
    api: &Api<K>,
    obj: &K,
    outcome: &Outcome,
) -> Result<bool, Error> {
    let current_conditions = obj
        .status()
        .map(|s| s.common().conditions.clone())
        .unwrap_or_default();
    let current = serde_json::to_value(obj.status())?;
    let Some(patch) = conditions::status_patch(
        &current,
        &current_conditions,
        obj.meta().generation,
        K::CONDITIONS,
        outcome,
    ) else {
        return Ok(false);
    };
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(true)
}

/// A pass over the object `name`: the object as the watch just delivered it when it is new and was
/// kept for this pass (`awaiting`), otherwise as the API server has it now.
async fn pass<K: Reconciled>(
    name: Arc<PartialObjectMeta<K>>,
    ctx: Arc<Context>,
    awaiting: Arc<awaiting::Awaiting<K>>,
) -> Result<Action, Error> {
    let kind = K::kind(&());
    let namespace = name.metadata.namespace.as_deref();
    let name = name.metadata.name.as_deref().unwrap_or_default();
    // Another instance's shard: nothing here is touched, and this instance stops reporting it.
    if let Some(namespace) = namespace
        && !ctx.in_shard(namespace).await?
    {
        ctx.metrics.objects.forget(&kind, namespace, name);
        return Ok(Action::await_change());
    }
    let obj = match awaiting.take(namespace, name) {
        Some(obj) => obj,
        None => match K::api(ctx.client.clone(), namespace).get_opt(name).await? {
            Some(mut obj) => {
                uncached(&mut obj);
                Arc::new(obj)
            }
            // Gone since it was scheduled: its Delete event forgets it.
            None => return Ok(Action::await_change()),
        },
    };
    reconcile(obj, ctx).await
}

/// Drops what no pass reads: an object's managedFields and kubectl's copy of its last applied
/// spec are often most of its size.
fn uncached<K: Reconciled>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    if let Some(annotations) = &mut obj.meta_mut().annotations {
        annotations.remove(LAST_APPLIED);
    }
}

async fn reconcile<K: Reconciled>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let kind = K::kind(&());
    let _timer = ctx.metrics.start(&kind);
    let api = K::api(ctx.client.clone(), obj.namespace().as_deref());
    let key = format!(
        "{kind}/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    );

    if obj.meta().deletion_timestamp.is_some() {
        return match finish_deletion(&*obj, &ctx, &api, &key).await {
            // A pass that raced the object's final removal: nothing is left to do.
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => Ok(Action::await_change()),
            other => other,
        };
    }

    let violations = obj.validate();
    let outcome = if violations.is_empty() {
        // Before any later behaviour can write to Azure, the object must not be deletable unseen.
        if !obj.finalizers().iter().any(|f| f == FINALIZER) {
            // This pass goes on with the object as it was; the echo of the patch needs no other,
            // unless someone else changed the object meanwhile (then its event shows that).
            let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
            let mut finalizers = obj.finalizers().to_vec();
            finalizers.push(FINALIZER.to_owned());
            let echo = trigger_fingerprint(obj.meta(), &finalizers);
            ctx.own_writes.expect(&kind, &namespace, &name, echo);
            if let Err(e) = add_finalizer(&api, &*obj).await {
                ctx.own_writes.withdraw(&kind, &namespace, &name);
                return Err(e);
            }
        }
        // One object cannot hold a reconcile slot for ever (what it made is recorded first).
        match tokio::time::timeout(RECONCILE_DEADLINE, obj.behaviour(&ctx)).await {
            Ok(outcome) => outcome?,
            Err(_) => Outcome::not_ready(
                Reason::Timeout,
                format!(
                    "reconciling took longer than {} s; looking again later",
                    RECONCILE_DEADLINE.as_secs()
                ),
            )
            .requeue(Duration::from_secs(60)),
        }
    } else {
        invalid_spec(&violations)
    };
    // A ready object is looked at again when it asked; one that is not backs off while it stays
    // so, and its status says when the next attempt is.
    let ready = outcome.ready_condition().is_some_and(|c| c.ok);
    let now = jiff::Timestamp::now().as_second();
    // A retry still ahead (this pass was triggered by something else, or by a restart) stands:
    // the backoff does not grow and status is not rewritten.
    let pending = obj
        .status()
        .and_then(|s| s.common().next_retry_time.as_deref())
        .and_then(crate::renewal::parse_rfc3339);
    let (requeue, next_retry) = ctx.backoff.next_attempt(
        &key,
        backoff::Verdict {
            ready,
            requeue: outcome.requeue,
            pending,
            retry_within: outcome.retry_within,
        },
        now,
    );
    let outcome = outcome.field(
        "nextRetryTime",
        next_retry.map_or(serde_json::Value::Null, |at| {
            crate::renewal::rfc3339(at).into()
        }),
    );

    let current_conditions = obj
        .status()
        .map(|s| s.common().conditions.clone())
        .unwrap_or_default();
    if write_status(&api, &*obj, &outcome).await? {
        let before =
            conditions::ready_of(&current_conditions).map(|(s, r, _)| (s.to_owned(), r.to_owned()));
        if let Some(ready) = outcome.ready_condition() {
            let now = (
                if ready.ok { "True" } else { "False" }.to_owned(),
                ready.reason.as_str().to_owned(),
            );
            // A new Ready verdict is an Event: a Warning when it says what is wrong. An object
            // whose credentials this pass issued for the first time gets the TokenIssued Event
            // (who got what, until when) instead of a second one saying it is Ready.
            let first_issue = ready.ok
                && outcome.events.iter().any(|(reason, action, _)| {
                    reason == crate::api::conditions::ConditionType::TokenIssued.as_str()
                        && action == "Issue"
                });
            if before.as_ref() != Some(&now) && !first_issue {
                let type_ = if ready.ok {
                    EventType::Normal
                } else {
                    EventType::Warning
                };
                publish(&ctx, &*obj, type_, ready.reason.as_str(), &ready.message).await;
            }
        }
        tracing::info!(kind = %kind, name = %obj.name_any(), namespace = obj.namespace(), reason = outcome.ready_condition().map(|c| c.reason.as_str()).unwrap_or_default(), "status updated");
    }
    // The expiry of what the object wrote, for alerting on credentials that stop being renewed.
    ctx.metrics.objects.set(
        &kind,
        obj.namespace().as_deref().unwrap_or_default(),
        &obj.name_any(),
        crate::metrics::ObjectValues {
            ready,
            expiry: outcome
                .fields
                .get("expiresAt")
                .and_then(|v| v.as_str())
                .and_then(crate::renewal::parse_rfc3339),
            failed_attempts: outcome
                .fields
                .get("failedAttempts")
                .and_then(|v| v.as_i64()),
        },
    );
    for (reason, action, note) in &outcome.events {
        publish_as(&ctx, &*obj, EventType::Normal, reason, action, note).await;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The deletion of an object: cleanup (or a wait for its dependents, or a bounded retry), then the
/// finalizer goes and what it referenced is told so.
async fn finish_deletion<K: Reconciled>(
    obj: &K,
    ctx: &Context,
    api: &Api<K>,
    key: &str,
) -> Result<Action, Error> {
    let kind = K::kind(&());
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    match obj.cleanup(ctx).await {
        Ok(Cleanup::Done) => {}
        Ok(Cleanup::Waiting(why)) => {
            tracing::debug!(kind = %kind, name = %obj.name_any(), namespace = obj.namespace(), %why, "cleanup waits");
            // Say why it stays Terminating (written only when the reason changes).
            let waiting = Outcome::not_ready(Reason::WaitingForDependents, why);
            write_status(api, obj, &waiting).await?;
            // Soon at first (a namespace deletion finishes in seconds), rarely if it lasts.
            let after = ctx
                .backoff
                .failed(key, Duration::from_secs(2))
                .min(Duration::from_secs(60));
            return Ok(Action::requeue(after));
        }
        Err(e) => {
            let failures = obj
                .status()
                .and_then(|s| s.common().cleanup_failures)
                .unwrap_or(0)
                .clamp(0, i64::from(u16::MAX))
                + 1;
            if failures < ctx.cleanup_attempts {
                tracing::warn!(kind = %kind, name = %obj.name_any(), namespace = obj.namespace(), failures, error = %e, "cleanup failed; retrying");
                api.patch_status(
                    &obj.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"status": {"cleanupFailures": failures}})),
                )
                .await?;
                let backoff = 5u64.saturating_mul(1 << (failures - 1).min(6)).min(300);
                return Ok(Action::requeue(Duration::from_secs(backoff)));
            }
            // Never block deletion forever: let go, and say loudly what may be left.
            let note = format!(
                "released after {failures} failed cleanup attempts; what it made in Azure may be left: {e}"
            );
            tracing::warn!(kind = %kind, name = %obj.name_any(), namespace = obj.namespace(), %note, "cleanup abandoned");
            publish(ctx, obj, EventType::Warning, "CleanupAbandoned", &note).await;
            ctx.metrics
                .cleanup_abandoned
                .get_or_create(&crate::metrics::KindLabels {
                    kind: kind.to_string(),
                })
                .inc();
        }
    }
    ctx.metrics.objects.forget(
        &kind,
        obj.namespace().as_deref().unwrap_or_default(),
        &obj.name_any(),
    );
    remove_finalizer(api, obj).await?;
    ctx.backoff.reset(key);
    for (kind, name) in obj.references() {
        let namespace = (!kind.starts_with("Cluster"))
            .then(|| obj.namespace())
            .flatten();
        let _ = ctx.released.send((kind.to_owned(), namespace, name));
    }
    tracing::info!(kind = %kind, name = %obj.name_any(), namespace = obj.namespace(), "finalizer removed");
    Ok(Action::await_change())
}

fn invalid_spec(violations: &[Violation]) -> Outcome {
    let message = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Outcome::not_ready(Reason::InvalidSpec, message)
}

async fn publish<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    publish_as(ctx, obj, type_, reason, "Reconcile", note).await
}

async fn publish_as<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(conditions::capped(note, 1000)),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.events.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an Event failed");
    }
}

/// kubectl's copy of an object's last applied spec: not kept in the controllers' caches.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object's annotations as the controllers' caches hold them.
fn cached_annotations(meta: &ObjectMeta) -> BTreeMap<&str, &str> {
    meta.annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// What the trigger's predicates see of an object whose finalizers are `finalizers`: its echo, when
/// the operator writes them.
fn trigger_fingerprint(meta: &ObjectMeta, finalizers: &[String]) -> u64 {
    own_writes::fingerprint((
        meta.generation,
        cached_annotations(meta),
        meta.labels.iter().flatten().collect::<Vec<_>>(),
        finalizers,
    ))
}

/// Adds the finalizer with a JSON patch that fails if the list changed meanwhile; returns the
/// object as patched.
async fn add_finalizer<K: Reconciled>(api: &Api<K>, obj: &K) -> Result<K, Error> {
    let patch = match &obj.meta().finalizers {
        None => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]),
        Some(list) => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": list},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ]),
    };
    let patch: json_patch::Patch = serde_json::from_value(patch)?;
    Ok(api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await?)
}

/// Removes the finalizer, again guarded by a test of the current list.
async fn remove_finalizer<K: Reconciled>(api: &Api<K>, obj: &K) -> Result<(), Error> {
    let list = obj.finalizers();
    let Some(index) = list.iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/finalizers", "value": list},
        {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
    ]))?;
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await?;
    Ok(())
}

fn error_policy<K: Reconciled>(
    obj: Arc<PartialObjectMeta<K>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let kind = K::kind(&()).to_string();
    ctx.metrics
        .errors
        .get_or_create(&ErrorLabels {
            kind: kind.clone(),
            reason: error.reason().into(),
        })
        .inc();
    let key = format!(
        "{kind}/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    );
    let after = ctx.backoff.failed(&key, Duration::from_secs(5));
    tracing::warn!(kind = %kind, name = %obj.name_any(), namespace = obj.namespace(), error = %error, retry_in = after.as_secs(), "reconcile failed");
    Action::requeue(after)
}

/// Which objects this instance reconciles.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Only this namespace. A namespace-scoped instance leaves cluster-scoped kinds alone unless
    /// `cluster_label_selector` picks the ones it owns.
    pub namespace: Option<String>,
    /// Only objects matching this label selector.
    pub label_selector: Option<String>,
    /// Which cluster-scoped objects this instance owns (default: all when cluster-wide, none when
    /// namespace-scoped), so several instances never write the same object.
    pub cluster_label_selector: Option<String>,
    /// Objects reconciled at once per kind.
    pub concurrency: u16,
}

fn namespaced_or_all<T: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>>(
    client: &Client,
    scope: &Scope,
) -> Api<T> {
    match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// `object` (of `kind`) as the objects that name it see it.
fn target_of<O: Resource>(kind: &'static str, object: &O) -> index::Target {
    index::Target {
        kind: kind.into(),
        namespace: object.meta().namespace.clone(),
        name: object.meta().name.clone().unwrap_or_default(),
    }
}

/// Changes to objects of `api`, metadata only: enough to know which dependents to reconcile.
fn changes<T>(
    api: Api<PartialObjectMeta<T>>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<T>, watcher::Error>> + Send + 'static
where
    T: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(api, config).default_backoff().touched_objects()
}

async fn run_one<K: Reconciled>(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut config = watcher::Config::default();
    if let Some(selector) = &scope.label_selector {
        config = config.labels(selector);
    }
    let api = K::api(ctx.client.clone(), scope.namespace.as_deref());
    let mut stop = shutdown;
    // The object's own changes trigger a reconcile only when someone changed what it asks for
    // (generation), its annotations (force-refresh), labels or finalizers: the operator's own
    // status writes never do, so a failing object waits out its backoff instead of looping.
    // The controller keeps only the objects' names (`awaiting.rs`).
    let (reader, mut writer) = kube::runtime::reflector::store::<PartialObjectMeta<K>>();
    let awaiting = Arc::new(awaiting::Awaiting::<K>::default());
    let index = Arc::new(index::ReferenceIndex::<K>::new(
        &ctx.azure.cluster_resource_namespace,
    ));
    let indexed = index.clone();
    let followed = awaiting.clone();
    let metrics = ctx.metrics.clone();
    let kind = K::kind(&()).into_owned();
    let trigger = watcher(api, config)
        .default_backoff()
        .modify(uncached)
        .inspect(move |event| {
            if let Ok(event) = event {
                writer.apply_watcher_event(&awaiting::names_of(event));
                followed.observe(event);
                indexed.observe(event);
                // An object deleted without the finalizer (one never valid) is never reconciled
                // again: its series go here, or they would alert for ever.
                if let watcher::Event::Delete(gone) = event {
                    metrics.objects.forget(
                        &kind,
                        gone.namespace().as_deref().unwrap_or_default(),
                        &gone.name_any(),
                    );
                }
            }
        })
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::annotations)
                .combine(predicates::labels)
                .combine(predicates::finalizers),
            Default::default(),
        );
    // After the predicates (which must see every version): the echo of the operator's own
    // finalizer patch is not a reason to reconcile again.
    let own = ctx.clone();
    let own_kind = K::kind(&()).into_owned();
    let trigger = trigger.filter(move |result| {
        let echo = result.as_ref().is_ok_and(|obj| {
            own.own_writes.is_echo(
                &own_kind,
                &obj.namespace().unwrap_or_default(),
                &obj.name_any(),
                trigger_fingerprint(obj.meta(), obj.finalizers()),
            )
        });
        futures::future::ready(!echo)
    });
    // This version asks for a pass: a new object waits for it whole, then only its name goes on.
    let kept = awaiting.clone();
    let trigger = trigger.map_ok(move |obj| {
        kept.keep(&obj);
        awaiting::name_of(&obj)
    });
    let in_namespace = reader.clone();
    let every = reader.clone();
    let controller = Controller::for_stream(trigger, reader);
    // A changed Secret, Workspace or credential reconciles the objects that name it; a namespace
    // whose labels changed (admission, shard) every object in it; missed changes every object that
    // names anything.
    let readers = index.clone();
    let changed = futures::stream::unfold(ctx.changes.subscribe(), |mut rx| async move {
        match rx.recv().await {
            Ok(change) => Some((Some(change), rx)),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some((None, rx)),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
    .flat_map(move |change| {
        futures::stream::iter(match change {
            Some(target) if target.kind == "Namespace" => in_namespace
                .state()
                .iter()
                .filter(|obj| obj.namespace().as_deref() == Some(target.name.as_str()))
                .map(|obj| ObjectRef::from_obj(&**obj))
                .collect(),
            Some(target) => scheduled(readers.readers(&target)),
            None => scheduled(readers.all_readers()),
        })
    });
    let controller = controller.reconcile_on(changed);
    // What a dependent let go of: reconciled now, so a waiting cleanup finishes without polling.
    let released = futures::stream::unfold(ctx.released.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(item) => return Some((item, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .filter_map(|(kind, namespace, name)| async move {
        (kind == K::kind(&()))
            .then(|| awaiting::reference::<PartialObjectMeta<K>>(namespace.as_deref(), &name))
    });
    let controller = controller.reconcile_on(released);
    let controller = if K::READS_COMPUTE_IDENTITIES {
        let readers = index.clone();
        let identities: Api<PartialObjectMeta<crate::api::ComputeIdentity>> =
            namespaced_or_all(&ctx.client, &scope);
        controller.watches_stream(changes(identities, Default::default()), move |ci| {
            scheduled(readers.readers(&target_of("ComputeIdentity", &ci)))
        })
    } else {
        controller
    };
    // Outputs the operator wrote: deleting or editing one brings its owner back to fix it. Secrets
    // come from the shared Secret watch (the echo of the operator's own write already dropped);
    // when this controller fell behind it, every object of the kind is looked at again.
    let outputs_changed =
        futures::stream::unfold(ctx.outputs_changed.subscribe(), |mut rx| async move {
            match rx.recv().await {
                Ok(owner) => Some((Some(owner), rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some((None, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
            }
        })
        .flat_map(move |owner| {
            futures::stream::iter(match owner {
                Some((kind, namespace, name)) if kind == K::kind(&()) => {
                    vec![awaiting::reference::<PartialObjectMeta<K>>(
                        Some(&namespace),
                        &name,
                    )]
                }
                Some(_) => Vec::new(),
                None => every
                    .state()
                    .iter()
                    .map(|obj| ObjectRef::from_obj(&**obj))
                    .collect(),
            })
        });
    let controller = controller.reconcile_on(outputs_changed);
    let controller = if K::WRITES_CONFIG_MAPS {
        let managed = watcher::Config::default().labels(&format!(
            "{}={}",
            crate::outputs::MANAGED_BY.0,
            crate::outputs::MANAGED_BY.1
        ));
        let config_maps: Api<PartialObjectMeta<ConfigMap>> = match &scope.namespace {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        controller.owns_stream(changes(config_maps, managed))
    } else {
        controller
    };
    controller
        .with_config(kube::runtime::controller::Config::default().concurrency(scope.concurrency))
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .run(
            move |name, ctx| pass(name, ctx, awaiting.clone()),
            error_policy::<K>,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// `objects` as the controller schedules them (by name).
fn scheduled<K: Reconciled>(objects: Vec<ObjectRef<K>>) -> Vec<ObjectRef<PartialObjectMeta<K>>> {
    objects
        .into_iter()
        .map(|o| o.into_kind_unchecked(()))
        .collect()
}

/// Runs every controller until `shutdown` turns true.
pub async fn run_all(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use crate::api::*;
    let (cluster_ctx, cluster_scope_base, cluster_shutdown) =
        (ctx.clone(), scope.clone(), shutdown.clone());
    let cluster_kinds = async move {
        let (ctx, scope, shutdown) = (cluster_ctx, cluster_scope_base, cluster_shutdown);
        // A shard of the cluster (one namespace, or the namespaces a selector picks) owns no
        // cluster-scoped object unless `cluster_label_selector` says which: one instance each.
        let shard = scope.namespace.is_some() || ctx.namespace_selector.is_some();
        match (shard, &scope.cluster_label_selector) {
            (true, None) => {}
            (_, Some(selector)) => {
                let cluster_scope = Scope {
                    label_selector: Some(selector.clone()),
                    ..scope.clone()
                };
                run_one::<ClusterAzureCredential>(ctx.clone(), cluster_scope, shutdown.clone())
                    .await;
            }
            (false, None) => {
                run_one::<ClusterAzureCredential>(ctx.clone(), scope.clone(), shutdown.clone())
                    .await
            }
        }
    };
    tokio::join!(
        shared::run(ctx.clone(), scope.clone(), shutdown.clone()),
        run_one::<AzureCredential>(ctx.clone(), scope.clone(), shutdown.clone()),
        cluster_kinds,
        run_one::<Workspace>(ctx.clone(), scope.clone(), shutdown.clone()),
        run_one::<ComputeIdentity>(ctx.clone(), scope.clone(), shutdown.clone()),
        run_one::<Datastore>(ctx.clone(), scope.clone(), shutdown.clone()),
        run_one::<RegistryConnection>(ctx, scope, shutdown),
    );
}
