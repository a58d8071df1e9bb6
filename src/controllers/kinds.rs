//! Each kind's place in the shared reconciler: its Api scope, status, the Secrets it reads, and its
//! behaviour.

use crate::api::conditions::{self, ConditionType};
use futures::future::BoxFuture;
use kube::{Api, Client, Resource, ResourceExt};

use super::{
    Cleanup, Context, Error, Outcome, Reconciled, compute_identity, credentials, datastore, in_use,
    registry_connection, workspace,
};
use crate::api::*;

macro_rules! namespaced_api {
    () => {
        fn api(client: Client, namespace: Option<&str>) -> Api<Self> {
            match namespace {
                Some(ns) => Api::namespaced(client, ns),
                None => Api::all(client),
            }
        }
    };
}

/// `record()` for a kind whose status carries `azureResources`.
macro_rules! recorded_in_status {
    () => {
        fn record(&self) -> &[AzureResource] {
            self.status
                .as_ref()
                .map(|s| s.azure_resources.as_slice())
                .unwrap_or_default()
        }
    };
}

/// The kind name of a credential reference.
fn credential_kind(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::AzureCredential => "AzureCredential",
        CredentialKind::ClusterAzureCredential => "ClusterAzureCredential",
    }
}

/// Secrets a credential spec reads, in `namespace`.
fn credential_secrets(spec: &CredentialSpec, namespace: &str) -> Vec<(String, String)> {
    let Some(sp) = &spec.service_principal else {
        return Vec::new();
    };
    [&sp.client_secret_ref, &sp.client_certificate_ref]
        .into_iter()
        .flatten()
        .map(|r| (namespace.to_owned(), r.name.clone()))
        .collect()
}

impl Reconciled for AzureCredential {
    type Status = CredentialStatus;
    const CONDITIONS: &'static [ConditionType] = conditions::CREDENTIAL_CONDITIONS;
    fn status(&self) -> Option<&CredentialStatus> {
        self.status.as_ref()
    }
    namespaced_api!();
    fn secrets(&self, _cluster_namespace: &str) -> Vec<(String, String)> {
        credential_secrets(&self.spec.credential, &self.namespace().unwrap_or_default())
    }
    fn behaviour<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(async move {
            let namespace = self.namespace().unwrap_or_default();
            let identity = format!(
                "AzureCredential/{namespace}/{}@{}",
                self.name_any(),
                self.meta().generation.unwrap_or_default()
            );
            let outcome =
                credentials::prove(ctx, &self.spec.credential, &namespace, &identity, true).await?;
            // Its Secrets outlive a namespace deletion until dependents have cleaned up.
            let wanted: Vec<String> = credential_secrets(&self.spec.credential, &namespace)
                .into_iter()
                .map(|(_, name)| name)
                .collect();
            let guarded = self
                .status
                .as_ref()
                .map(|s| s.guarded_secrets.clone())
                .unwrap_or_default();
            let released: Vec<String> = guarded
                .into_iter()
                .filter(|g| !wanted.contains(g))
                .collect();
            in_use::guard_secrets(ctx, &namespace, &released, true).await?;
            in_use::guard_secrets(ctx, &namespace, &wanted, false).await?;
            Ok(outcome.field("guardedSecrets", serde_json::json!(wanted)))
        })
    }
    fn cleanup<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Cleanup, Error>> {
        Box::pin(async move {
            let namespace = self.namespace().unwrap_or_default();
            let waiting =
                in_use::dependents(ctx, Some(&namespace), "AzureCredential", &self.name_any())
                    .await?;
            if !waiting.is_empty() {
                return Ok(Cleanup::Waiting(format!(
                    "waiting for {} to finish their cleanup",
                    waiting.join(", ")
                )));
            }
            let mut all: Vec<String> = credential_secrets(&self.spec.credential, &namespace)
                .into_iter()
                .map(|(_, name)| name)
                .collect();
            all.extend(self.status.iter().flat_map(|s| s.guarded_secrets.clone()));
            in_use::guard_secrets(ctx, &namespace, &all, true).await?;
            Ok(Cleanup::Done)
        })
    }
}

impl Reconciled for ClusterAzureCredential {
    type Status = CredentialStatus;
    const CONDITIONS: &'static [ConditionType] = conditions::CREDENTIAL_CONDITIONS;
    fn status(&self) -> Option<&CredentialStatus> {
        self.status.as_ref()
    }
    fn api(client: Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
    fn secrets(&self, cluster_namespace: &str) -> Vec<(String, String)> {
        credential_secrets(&self.spec.credential, cluster_namespace)
    }
    fn cleanup<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Cleanup, Error>> {
        Box::pin(async move {
            let waiting =
                in_use::dependents(ctx, None, "ClusterAzureCredential", &self.name_any()).await?;
            Ok(if waiting.is_empty() {
                Cleanup::Done
            } else {
                Cleanup::Waiting(format!(
                    "waiting for {} to finish their cleanup",
                    waiting.join(", ")
                ))
            })
        })
    }
    fn behaviour<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(async move {
            let identity = format!(
                "ClusterAzureCredential/{}@{}",
                self.name_any(),
                self.meta().generation.unwrap_or_default()
            );
            credentials::prove(
                ctx,
                &self.spec.credential,
                &ctx.azure.cluster_resource_namespace,
                &identity,
                false,
            )
            .await
        })
    }
}

impl Reconciled for Workspace {
    type Status = WorkspaceStatus;
    const CONDITIONS: &'static [ConditionType] = conditions::WORKSPACE_CONDITIONS;
    fn status(&self) -> Option<&WorkspaceStatus> {
        self.status.as_ref()
    }
    namespaced_api!();
    fn references(&self) -> Vec<(&'static str, String)> {
        vec![(
            credential_kind(self.spec.credential_ref.kind),
            self.spec.credential_ref.name.clone(),
        )]
    }
    const WRITES_CONFIG_MAPS: bool = true;
    fn behaviour<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(workspace::reconcile(self, ctx))
    }
    recorded_in_status!();
    fn cleanup<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Cleanup, Error>> {
        Box::pin(workspace::cleanup(self, ctx))
    }
}

impl Reconciled for ComputeIdentity {
    type Status = ComputeIdentityStatus;
    const CONDITIONS: &'static [ConditionType] = conditions::COMPUTE_IDENTITY_CONDITIONS;
    fn status(&self) -> Option<&ComputeIdentityStatus> {
        self.status.as_ref()
    }
    namespaced_api!();
    fn references(&self) -> Vec<(&'static str, String)> {
        vec![("Workspace", self.spec.workspace_ref.name.clone())]
    }
    fn behaviour<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(compute_identity::reconcile(self, ctx))
    }
    recorded_in_status!();
    fn cleanup<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Cleanup, Error>> {
        Box::pin(compute_identity::cleanup(self, ctx))
    }
}

impl Reconciled for Datastore {
    type Status = DatastoreStatus;
    const CONDITIONS: &'static [ConditionType] = conditions::DATASTORE_CONDITIONS;
    fn status(&self) -> Option<&DatastoreStatus> {
        self.status.as_ref()
    }
    namespaced_api!();
    fn secrets(&self, _cluster_namespace: &str) -> Vec<(String, String)> {
        let namespace = self.namespace().unwrap_or_default();
        let c = self.spec.credentials.as_ref();
        let refs = c
            .and_then(|c| c.secret_ref.clone())
            .into_iter()
            .chain(c.and_then(|c| c.service_principal.as_ref().map(|sp| sp.secret_ref.clone())));
        refs.map(|r| (namespace.clone(), r.name)).collect()
    }
    fn references(&self) -> Vec<(&'static str, String)> {
        let mut refs = vec![("Workspace", self.spec.workspace_ref.name.clone())];
        if let Some(identity) = self
            .spec
            .pod_access
            .as_ref()
            .and_then(|p| p.identity.as_ref())
        {
            refs.push((
                "ComputeIdentity",
                identity.compute_identity_ref.name.clone(),
            ));
        }
        refs
    }
    const READS_COMPUTE_IDENTITIES: bool = true;
    fn behaviour<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(datastore::reconcile(self, ctx))
    }
    recorded_in_status!();
    fn cleanup<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Cleanup, Error>> {
        Box::pin(datastore::cleanup(self, ctx))
    }
}

impl Reconciled for RegistryConnection {
    type Status = RegistryConnectionStatus;
    const CONDITIONS: &'static [ConditionType] = conditions::REGISTRY_CONNECTION_CONDITIONS;
    fn status(&self) -> Option<&RegistryConnectionStatus> {
        self.status.as_ref()
    }
    namespaced_api!();
    fn secrets(&self, _cluster_namespace: &str) -> Vec<(String, String)> {
        let namespace = self.namespace().unwrap_or_default();
        self.spec
            .auth
            .service_principal
            .iter()
            .map(|sp| (namespace.clone(), sp.client_secret_ref.name.clone()))
            .collect()
    }
    fn references(&self) -> Vec<(&'static str, String)> {
        let mut refs: Vec<(&'static str, String)> = self
            .spec
            .workspace_ref
            .iter()
            .map(|w| ("Workspace", w.name.clone()))
            .collect();
        if let Some(c) = &self.spec.credential_ref {
            refs.push((credential_kind(c.kind), c.name.clone()));
        }
        if let Some(ci) = self
            .spec
            .auth
            .managed_identity
            .as_ref()
            .and_then(|m| m.compute_identity_ref.as_ref())
        {
            refs.push(("ComputeIdentity", ci.name.clone()));
        }
        refs
    }
    const READS_COMPUTE_IDENTITIES: bool = true;
    fn behaviour<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(registry_connection::reconcile(self, ctx))
    }
    recorded_in_status!();
    fn cleanup<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<Cleanup, Error>> {
        Box::pin(registry_connection::cleanup(self, ctx))
    }
}
