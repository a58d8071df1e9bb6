//! One controller per kind, all with the same reconciler shape: validate first, then the kind's
//! behaviour, then the status; the finalizer is added before any Azure write and removed on delete.

mod conditions;
mod kinds;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{HasCommonStatus, Validate, Violation};
use crate::metrics::{ErrorLabels, Metrics};
pub use conditions::{READY, Verdict};

/// Finalizer the operator puts on objects whose behaviour may create something in Azure.
pub const FINALIZER: &str = "amlidentity.io/finalizer";
/// Field manager and Event reporter name.
pub const MANAGER: &str = "aml-identity-operator";

/// Shared by every controller.
pub struct Context {
    /// Client of the API server.
    pub client: Client,
    /// Publishes Events on the reconciled objects.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// A context for `client`; `instance` tells Events of several operator processes apart.
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
        }
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
}

impl Error {
    /// Metric and Event reason for the error (a short, bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::Serialization(_) => "SerializationError",
        }
    }
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
    type Status: HasCommonStatus;
    /// The current status, if any.
    fn status(&self) -> Option<&Self::Status>;
    /// Api for objects of this kind in `namespace` (ignored for cluster-scoped kinds; `None` = all).
    fn api(client: Client, namespace: Option<&str>) -> Api<Self>;
    /// The kind's behaviour for a valid spec. Until a kind's behaviour lands, it says so honestly.
    fn behaviour(&self) -> Verdict {
        Verdict::not_ready(
            "NotImplemented",
            format!(
                "the spec is valid; reconciling {} against Azure is not implemented in this version",
                Self::kind(&())
            ),
        )
    }
}

/// Reconciles one object: the shape every kind shares.
async fn reconcile<K: Reconciled>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let kind = K::kind(&());
    let _timer = ctx.metrics.start(&kind);
    let api = K::api(ctx.client.clone(), obj.namespace().as_deref());

    if obj.meta().deletion_timestamp.is_some() {
        // No kind creates anything in Azure yet, so there is nothing to clean up before letting go.
        if obj.finalizers().iter().any(|f| f == FINALIZER) {
            remove_finalizer(&api, &*obj).await?;
            tracing::info!(kind = %kind, name = %obj.name_any(), namespace = obj.namespace(), "finalizer removed");
        }
        return Ok(Action::await_change());
    }

    let violations = obj.validate();
    let verdict = if violations.is_empty() {
        // Before any later behaviour can write to Azure, the object must not be deletable unseen.
        if !obj.finalizers().iter().any(|f| f == FINALIZER) {
            add_finalizer(&api, &*obj).await?;
        }
        obj.behaviour()
    } else {
        invalid_spec(&violations)
    };

    let current = obj.status().map(|s| s.common().clone()).unwrap_or_default();
    if let Some(common) = conditions::next_status(&current, obj.meta().generation, &verdict) {
        let patch = serde_json::json!({ "status": common });
        api.patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        let ready_changed = conditions::ready_changed(&current, &common);
        if ready_changed && verdict.reason == "InvalidSpec" {
            publish(
                &ctx,
                &*obj,
                EventType::Warning,
                "InvalidSpec",
                &verdict.message,
            )
            .await;
        }
        tracing::info!(kind = %kind, name = %obj.name_any(), namespace = obj.namespace(), reason = %verdict.reason, "status updated");
    }
    Ok(Action::await_change())
}

fn invalid_spec(violations: &[Violation]) -> Verdict {
    let message = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Verdict::not_ready("InvalidSpec", message)
}

async fn publish<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "publishing an Event failed");
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Adds the finalizer with a JSON patch that fails if the list changed meanwhile.
async fn add_finalizer<K: Reconciled>(api: &Api<K>, obj: &K) -> Result<(), Error> {
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
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await?;
    Ok(())
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

fn error_policy<K: Reconciled>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let kind = K::kind(&()).to_string();
    ctx.metrics
        .errors
        .get_or_create(&ErrorLabels {
            kind: kind.clone(),
            reason: error.reason().into(),
        })
        .inc();
    tracing::warn!(kind = %kind, name = %obj.name_any(), namespace = obj.namespace(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Which objects this instance reconciles.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Only this namespace (cluster-scoped kinds are always watched cluster-wide).
    pub namespace: Option<String>,
    /// Only objects matching this label selector.
    pub label_selector: Option<String>,
    /// Objects reconciled at once per kind.
    pub concurrency: u16,
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
    Controller::new(api, config)
        .with_config(kube::runtime::controller::Config::default().concurrency(scope.concurrency))
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// Runs every controller until `shutdown` turns true.
pub async fn run_all(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use crate::api::*;
    tokio::join!(
        run_one::<AzureCredential>(ctx.clone(), scope.clone(), shutdown.clone()),
        run_one::<ClusterAzureCredential>(ctx.clone(), scope.clone(), shutdown.clone()),
        run_one::<Workspace>(ctx.clone(), scope.clone(), shutdown.clone()),
        run_one::<ComputeIdentity>(ctx.clone(), scope.clone(), shutdown.clone()),
        run_one::<Datastore>(ctx.clone(), scope.clone(), shutdown.clone()),
        run_one::<RegistryConnection>(ctx, scope, shutdown),
    );
}
