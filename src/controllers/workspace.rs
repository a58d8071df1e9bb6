//! The `Workspace` behaviour: sign in through the referenced credential, read the workspace
//! (`Adopt`) or converge it (`Manage`: GET, diff, PUT only on drift, follow the long-running
//! operation), ensure the role table for its user-assigned identity, and export `config.json`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use serde_json::json;

use super::credentials::{self, ResolveError};
use super::{Context, Error, Outcome};
use crate::api::*;
use crate::azure::arm::ArmClient;
use crate::azure::models::ml_api_versions::MACHINE_LEARNING;
use crate::azure::models::{self, api_versions};
use crate::azure::{AzureError, Cloud};
use crate::outputs::{self, OutputError};

const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
const STORAGE_BLOB_DATA_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";
const KEY_VAULT_ADMINISTRATOR: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";

/// The workspace's ARM path.
pub fn path(spec: &WorkspaceSpec) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/workspaces/{}",
        spec.subscription_id, spec.resource_group, spec.workspace_name
    )
}

/// The outcome of an Azure call that failed: its reason, and when to look again.
pub fn azure_failure(error: &AzureError, what: &str) -> Outcome {
    let after = match error {
        AzureError::Throttled { retry_after, .. } => *retry_after,
        e if e.is_transient() => 30,
        _ => 300,
    };
    let outcome = Outcome::not_ready(error.reason(), format!("{what}: {error}"))
        .requeue(Duration::from_secs(after));
    if let AzureError::Throttled { retry_after, .. } = error {
        return outcome.field(
            "nextRetryTime",
            jiff::Timestamp::now().as_second() + *retry_after as i64,
        );
    }
    outcome
}

/// A Workspace a namespaced object refers to, signed in through its credential: the Workspace, an
/// ARM client, its cloud and tenant — or the outcome saying why not.
pub async fn referenced(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Result<(Workspace, ArmClient, Cloud, String), Outcome>, Error> {
    let Some(ws) = kube::Api::<Workspace>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await?
    else {
        let outcome = Outcome::not_ready(
            "WorkspaceNotFound",
            format!("Workspace {namespace}/{name} does not exist"),
        )
        .requeue(Duration::from_secs(60));
        return Ok(Err(outcome));
    };
    Ok(arm_for(ctx, namespace, &ws.spec.credential_ref)
        .await?
        .map(|(arm, cloud, tenant)| (ws, arm, cloud, tenant)))
}

/// The outcome when the credential cannot be used (including `Denied`, before any token request).
pub fn credential_failure(error: ResolveError) -> Result<Outcome, Error> {
    match error {
        ResolveError::Kube(e) => Err(e.into()),
        e => {
            let message = e.to_string();
            Ok(Outcome::not_ready(e.reason(), message.clone())
                .condition("CredentialResolved", false, e.reason(), message)
                .requeue(Duration::from_secs(300)))
        }
    }
}

/// An ARM client signing in through the object's credential reference, and its cloud.
pub async fn arm_for(
    ctx: &Context,
    namespace: &str,
    reference: &CredentialRef,
) -> Result<Result<(ArmClient, Cloud, String), Outcome>, Error> {
    match credentials::resolve_ref(ctx, namespace, reference).await {
        Ok(resolved) => {
            let http = match ctx.azure.transport.client() {
                Ok(h) => h,
                Err(e) => return Ok(Err(azure_failure(&e, "Azure transport"))),
            };
            let tenant = resolved.credential.tenant_id().to_owned();
            let arm = ArmClient::new(
                http,
                &resolved.cloud.resource_manager,
                resolved.credential,
                ctx.azure.tokens.clone(),
                ctx.azure.budget.clone(),
            )
            .observed(ctx.azure.transport.observer.clone());
            Ok(Ok((arm, resolved.cloud, tenant)))
        }
        Err(e) => credential_failure(e).map(Err),
    }
}

fn identity_type(t: WorkspaceIdentityType) -> &'static str {
    match t {
        WorkspaceIdentityType::SystemAssigned => "SystemAssigned",
        WorkspaceIdentityType::UserAssigned => "UserAssigned",
        WorkspaceIdentityType::SystemAssignedUserAssigned => "SystemAssigned,UserAssigned",
    }
}

/// Whether the workspace's identity is the one the spec declares (ids compared case-insensitively).
fn identity_matches(
    spec: &WorkspaceIdentity,
    actual: Option<&models::ManagedServiceIdentity>,
    primary: Option<&str>,
) -> bool {
    let Some(actual) = actual else { return false };
    let lower = |s: &str| s.to_ascii_lowercase();
    let want: Vec<String> = spec
        .user_assigned_identities
        .iter()
        .map(|s| lower(s))
        .collect();
    let have: Vec<String> = actual
        .user_assigned_identities
        .keys()
        .map(|s| lower(s))
        .collect();
    let same_set = want.len() == have.len() && want.iter().all(|w| have.contains(w));
    let same_primary =
        spec.primary_user_assigned_identity.as_deref().map(lower) == primary.map(lower);
    actual.type_ == identity_type(spec.type_) && same_set && same_primary
}

/// Whether the workspace differs from the spec in what `Manage` owns.
fn drifted(spec: &WorkspaceSpec, ws: &models::Workspace) -> bool {
    let p = &ws.properties;
    let eq = |want: &Option<String>, have: &Option<String>| {
        want.as_ref()
            .is_none_or(|w| have.as_ref().is_some_and(|h| h.eq_ignore_ascii_case(w)))
    };
    let resources = spec.associated_resources.clone().unwrap_or_default();
    let identity = spec.identity.as_ref().is_some_and(|i| {
        !identity_matches(
            i,
            ws.identity.as_ref(),
            p.primary_user_assigned_identity.as_deref(),
        )
    });
    identity
        || !eq(&resources.storage_account, &p.storage_account)
        || !eq(&resources.key_vault, &p.key_vault)
        || !eq(&resources.container_registry, &p.container_registry)
        || !eq(&resources.application_insights, &p.application_insights)
}

/// The PUT body: the current workspace (so nothing the operator does not manage is lost) with the
/// spec's identity, associated resources and location.
fn desired(spec: &WorkspaceSpec, current: Option<&models::Workspace>) -> models::Workspace {
    let mut ws = current.cloned().unwrap_or_default();
    ws.location = ws.location.or_else(|| spec.location.clone());
    if let Some(identity) = &spec.identity {
        ws.identity = Some(models::ManagedServiceIdentity {
            type_: identity_type(identity.type_).into(),
            principal_id: None,
            tenant_id: None,
            user_assigned_identities: identity
                .user_assigned_identities
                .iter()
                .map(|id| (id.clone(), Default::default()))
                .collect(),
        });
        ws.properties.primary_user_assigned_identity =
            identity.primary_user_assigned_identity.clone();
    }
    if let Some(r) = &spec.associated_resources {
        let p = &mut ws.properties;
        for (field, value) in [
            (&mut p.storage_account, &r.storage_account),
            (&mut p.key_vault, &r.key_vault),
            (&mut p.container_registry, &r.container_registry),
            (&mut p.application_insights, &r.application_insights),
        ] {
            if value.is_some() {
                *field = value.clone();
            }
        }
    }
    ws
}

/// A deterministic role assignment name, so re-running never creates duplicates.
pub fn assignment_name(scope: &str, role: &str, principal: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("{}|{role}|{principal}", scope.to_ascii_lowercase()).as_bytes(),
    )
    .to_string()
}

/// The AML role table for a user-assigned workspace identity, as (scope, role) pairs.
fn role_table(spec: &WorkspaceSpec) -> Vec<(String, &'static str)> {
    let r = spec.associated_resources.clone().unwrap_or_default();
    let mut table = vec![(path(spec), CONTRIBUTOR)];
    for scope in [
        &r.storage_account,
        &r.key_vault,
        &r.container_registry,
        &r.application_insights,
    ]
    .into_iter()
    .flatten()
    {
        table.push((scope.clone(), CONTRIBUTOR));
    }
    if let Some(storage) = &r.storage_account {
        table.push((storage.clone(), STORAGE_BLOB_DATA_CONTRIBUTOR));
    }
    if let Some(vault) = &r.key_vault {
        table.push((vault.clone(), KEY_VAULT_ADMINISTRATOR));
    }
    table
}

/// Ensures a role assignment; one that exists under another name counts as ensured.
pub async fn ensure_role(
    arm: &ArmClient,
    scope: &str,
    role: &str,
    principal: &str,
) -> Result<(), AzureError> {
    let subscription = scope.split('/').nth(2).unwrap_or_default();
    let body = models::RoleAssignment {
        properties: models::RoleAssignmentProperties {
            role_definition_id: format!(
                "/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role}"
            ),
            principal_id: principal.to_owned(),
            principal_type: Some("ServicePrincipal".into()),
            scope: None,
        },
        ..Default::default()
    };
    let path = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
        assignment_name(scope, role, principal)
    );
    match arm
        .put::<_, models::RoleAssignment>(&path, api_versions::AUTHORIZATION, &body)
        .await
    {
        Ok(_) => Ok(()),
        Err(AzureError::Arm {
            status: 409, code, ..
        }) if code == "RoleAssignmentExists" => Ok(()),
        Err(e) => Err(e),
    }
}

/// The workspace behaviour.
pub async fn reconcile(ws: &Workspace, ctx: &Context) -> Result<Outcome, Error> {
    let spec = &ws.spec;
    let namespace = ws.namespace().unwrap_or_default();
    let arm = match arm_for(ctx, &namespace, &spec.credential_ref).await? {
        Ok((arm, _, _)) => arm,
        Err(outcome) => return Ok(outcome),
    };
    let path = path(spec);
    let current: Option<models::Workspace> =
        match arm.get(&path, MACHINE_LEARNING).await {
            Ok(c) => c,
            Err(e) => {
                return Ok(azure_failure(
                    &e,
                    &format!("reading workspace {}", spec.workspace_name),
                )
                .condition("CredentialResolved", true, "Resolved", "signed in"));
            }
        };
    let manage = spec.management == Some(Management::Manage);
    let workspace = match current {
        None if !manage => {
            return Ok(Outcome::not_ready(
                "WorkspaceNotFound",
                format!("workspace {} does not exist in resource group {} of subscription {}: create it, or set management: Manage", spec.workspace_name, spec.resource_group, spec.subscription_id),
            )
            .condition("CredentialResolved", true, "Resolved", "signed in")
            .requeue(Duration::from_secs(300)));
        }
        Some(current) if !manage || !drifted(spec, &current) => current,
        current => match arm
            .put_and_wait::<_, models::Workspace>(
                &path,
                MACHINE_LEARNING,
                &desired(spec, current.as_ref()),
            )
            .await
        {
            Ok(w) => w,
            Err(e) => {
                return Ok(azure_failure(
                    &e,
                    &format!("writing workspace {}", spec.workspace_name),
                )
                .condition("CredentialResolved", true, "Resolved", "signed in"));
            }
        },
    };

    let identity_ok = spec.identity.as_ref().is_none_or(|i| {
        identity_matches(
            i,
            workspace.identity.as_ref(),
            workspace
                .properties
                .primary_user_assigned_identity
                .as_deref(),
        )
    });
    let identity_cond = if identity_ok {
        (
            "IdentityReady",
            true,
            "IdentityMatches",
            "the workspace identity is the one declared".to_owned(),
        )
    } else {
        ("IdentityReady", false, "IdentityMismatch", "the workspace identity differs from spec.identity; with management: Adopt the operator does not change it".to_owned())
    };

    // The role table, for the primary user-assigned identity.
    let (roles_ok, roles_reason, roles_message) = match spec.role_assignments {
        Some(RoleAssignmentsMode::Ensure) => {
            let primary = workspace
                .properties
                .primary_user_assigned_identity
                .clone()
                .unwrap_or_default();
            let principal = workspace
                .identity
                .as_ref()
                .and_then(|i| {
                    i.user_assigned_identities
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(&primary))
                })
                .and_then(|(_, v)| v.principal_id.clone());
            match principal {
                None => (
                    false,
                    "PrimaryIdentityUnknown",
                    "the workspace reports no principal for its primary user-assigned identity"
                        .to_owned(),
                ),
                Some(principal) => {
                    let table = role_table(spec);
                    let mut failure = None;
                    for (scope, role) in &table {
                        if let Err(e) = ensure_role(&arm, scope, role, &principal).await {
                            failure = Some(e);
                            break;
                        }
                    }
                    match failure {
                        None => (
                            true,
                            "RoleAssignmentsEnsured",
                            format!("{} role assignments for principal {principal}", table.len()),
                        ),
                        Some(e) => (
                            false,
                            e.reason(),
                            format!("granting the workspace identity its roles: {e}"),
                        ),
                    }
                }
            }
        }
        _ => (true, "NotRequested", "roleAssignments is None".to_owned()),
    };

    let p = &workspace.properties;
    let conflict = match &spec.config_map_name {
        None => None,
        Some(name) => {
            let config = json!({
                "subscription_id": spec.subscription_id,
                "resource_group": spec.resource_group,
                "workspace_name": spec.workspace_name,
                "workspace_id": p.workspace_id,
                "location": workspace.location,
                "mlflow_tracking_uri": p.ml_flow_tracking_uri,
                "discovery_url": p.discovery_url,
            });
            let map = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    "config.json".to_owned(),
                    serde_json::to_string_pretty(&config).unwrap_or_default(),
                )])),
                ..Default::default()
            };
            match outputs::apply(&ctx.client, ws, map).await {
                Ok(_) => None,
                Err(OutputError::Kube(e)) => return Err(e.into()),
                Err(e @ OutputError::Conflict { .. }) => Some(e.to_string()),
            }
        }
    };
    let outcome = if let Some(conflict) = conflict {
        Outcome::not_ready("TargetConflict", conflict)
    } else if !roles_ok {
        Outcome::not_ready(roles_reason, roles_message.clone())
    } else if !identity_ok {
        Outcome::not_ready(identity_cond.2, identity_cond.3.clone())
    } else {
        Outcome::ready(
            "WorkspaceReady",
            format!(
                "workspace {} ({}) is {}",
                spec.workspace_name,
                p.workspace_id.as_deref().unwrap_or("?"),
                p.provisioning_state.as_deref().unwrap_or("present")
            ),
        )
    }
    .condition("CredentialResolved", true, "Resolved", "signed in")
    .condition(
        identity_cond.0,
        identity_cond.1,
        identity_cond.2,
        identity_cond.3,
    )
    .condition(
        "RoleAssignmentsReady",
        roles_ok,
        roles_reason,
        roles_message,
    )
    .field(
        "resourceId",
        workspace.id.clone().unwrap_or_else(|| path.clone()),
    )
    .field("workspaceId", json!(p.workspace_id))
    .field(
        "principalId",
        json!(
            workspace
                .identity
                .as_ref()
                .and_then(|i| i.principal_id.clone())
        ),
    )
    .field("tenantId", json!(p.tenant_id))
    .field("mlflowTrackingUri", json!(p.ml_flow_tracking_uri))
    // Look again now and then: someone may change the workspace in Azure.
    .requeue(Duration::from_secs(600));
    Ok(outcome)
}

/// Cleanup on delete, per `deletionPolicy`: with `Delete`, remove the role assignments the operator
/// made and, when managed, the workspace itself. Azure scopes already gone count as cleaned.
pub async fn cleanup(ws: &Workspace, ctx: &Context) -> Result<(), Error> {
    let spec = &ws.spec;
    if spec.deletion_policy != Some(DeletionPolicy::Delete) {
        return Ok(());
    }
    let namespace = ws.namespace().unwrap_or_default();
    let arm = match arm_for(ctx, &namespace, &spec.credential_ref).await? {
        Ok((arm, _, _)) => arm,
        Err(outcome) => {
            // Without a usable credential nothing can be removed; say so rather than block forever.
            let reason = outcome
                .ready_condition()
                .map(|c| c.message.clone())
                .unwrap_or_default();
            tracing::warn!(workspace = %spec.workspace_name, %reason, "cannot clean up in Azure; releasing the object");
            return Ok(());
        }
    };
    let path = path(spec);
    if let Ok(Some(current)) = arm.get::<models::Workspace>(&path, MACHINE_LEARNING).await {
        let primary = current
            .properties
            .primary_user_assigned_identity
            .clone()
            .unwrap_or_default();
        let principal = current
            .identity
            .as_ref()
            .and_then(|i| {
                i.user_assigned_identities
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&primary))
            })
            .and_then(|(_, v)| v.principal_id.clone());
        if let (Some(RoleAssignmentsMode::Ensure), Some(principal)) =
            (spec.role_assignments, principal)
        {
            for (scope, role) in role_table(spec) {
                let path = format!(
                    "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
                    assignment_name(&scope, role, &principal)
                );
                if let Err(e) = arm.delete(&path, api_versions::AUTHORIZATION).await {
                    if e.is_transient() {
                        return Err(Error::Azure(e.to_string()));
                    }
                    tracing::warn!(error = %e, "removing a role assignment failed");
                }
            }
        }
    }
    if spec.management == Some(Management::Manage)
        && let Err(e) = arm.delete_and_wait(&path, MACHINE_LEARNING).await
    {
        if e.is_transient() {
            return Err(Error::Azure(e.to_string()));
        }
        tracing::warn!(error = %e, "deleting the workspace failed");
    }
    Ok(())
}
