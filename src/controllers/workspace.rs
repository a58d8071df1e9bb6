//! The `Workspace` behaviour: sign in through the referenced credential, check every id the spec
//! names against the credential's scopes, read the workspace (`Adopt`) or converge it (`Manage`:
//! create it when absent, then GET, diff, PUT only on drift — never one it did not create), ensure
//! the role table for its user-assigned identity on the workspace's real associated resources, and
//! export `config.json`. What it made is recorded; cleanup walks the record per `deletionPolicy`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::ledger::{Ledger, OWNER_TAG};
use super::resolve::{self, azure_failure, ids};
use super::revocation;
use super::vault_access;
use super::{Cleanup, Context, Error, Outcome, Reconciled};
use crate::api::conditions::{ConditionType, Reason};
use crate::api::*;
use crate::azure::authorization::{Grant, roles};
use crate::azure::models;
use crate::azure::models::ml_api_versions::MACHINE_LEARNING;
use crate::outputs::{self, OutputError};

/// Every ARM id the spec names, with its field.
fn spec_ids(spec: &WorkspaceSpec) -> Vec<(String, String)> {
    let workspace = spec.arm_id();
    let mut out = ids([(
        "spec.subscriptionId/resourceGroup/workspaceName".to_owned(),
        Some(&workspace),
    )]);
    if let Some(identity) = &spec.identity {
        for (i, id) in identity.user_assigned_identities.iter().enumerate() {
            out.push((
                format!("spec.identity.userAssignedIdentities[{i}]"),
                id.clone(),
            ));
        }
    }
    if let Some(r) = &spec.associated_resources {
        out.extend(ids([
            (
                "spec.associatedResources.storageAccount".to_owned(),
                r.storage_account.as_ref(),
            ),
            (
                "spec.associatedResources.keyVault".to_owned(),
                r.key_vault.as_ref(),
            ),
            (
                "spec.associatedResources.containerRegistry".to_owned(),
                r.container_registry.as_ref(),
            ),
            (
                "spec.associatedResources.applicationInsights".to_owned(),
                r.application_insights.as_ref(),
            ),
        ]));
    }
    out
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
/// spec's identity, associated resources and location, and the owner tag.
fn desired(
    spec: &WorkspaceSpec,
    current: Option<&models::Workspace>,
    owner: &str,
) -> models::Workspace {
    let mut ws = current.cloned().unwrap_or_default();
    ws.location = ws.location.or_else(|| spec.location.clone());
    ws.tags.insert(OWNER_TAG.into(), owner.into());
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

/// The AML role table for a user-assigned workspace identity, on the workspace and the associated
/// resources ARM reports for it (never ids from the spec), with the field each came from. Key
/// Vault Administrator only on a vault that authorizes with Azure RBAC (`vault_rbac`); the other
/// kind gets an access policy instead ([`vault_access`]).
fn role_table(
    workspace_id: &str,
    p: &models::WorkspaceProperties,
    vault_rbac: bool,
) -> Vec<(String, String, &'static str)> {
    let mut table = vec![(
        "the workspace".to_owned(),
        workspace_id.to_owned(),
        roles::CONTRIBUTOR,
    )];
    for (name, scope) in [
        ("storageAccount", &p.storage_account),
        ("keyVault", &p.key_vault),
        ("containerRegistry", &p.container_registry),
        ("applicationInsights", &p.application_insights),
    ] {
        if let Some(scope) = scope {
            let field = format!("the workspace's {name} (as ARM reports it)");
            table.push((field.clone(), scope.clone(), roles::CONTRIBUTOR));
            match name {
                "storageAccount" => {
                    table.push((field, scope.clone(), roles::STORAGE_BLOB_DATA_CONTRIBUTOR))
                }
                "keyVault" if vault_rbac => {
                    table.push((field, scope.clone(), roles::KEY_VAULT_ADMINISTRATOR))
                }
                _ => {}
            }
        }
    }
    table
}

/// Ensures the role table for `principal` (the primary user-assigned identity): the scopes
/// checked against the credential first, the key vault's permission model read, then the role
/// assignments and, on an access-policy vault, the access policy. Returns the condition's
/// status, reason and message.
#[allow(clippy::too_many_arguments)]
async fn ensure_role_table(
    ctx: &Context,
    ws: &Workspace,
    signed: &resolve::Signed,
    ledger: &mut Ledger,
    workspace: &models::Workspace,
    path: &str,
    principal: &str,
    namespace: &str,
) -> Result<(bool, Reason, String), Error> {
    let arm = &signed.arm;
    let p = &workspace.properties;
    let scopes: Vec<(String, String)> = role_table(path, p, true)
        .iter()
        .map(|(f, s, _)| (f.clone(), s.clone()))
        .collect();
    if let Err(outcome) = signed.check(&scopes, namespace) {
        let message = outcome
            .ready_condition()
            .map(|c| c.message.clone())
            .unwrap_or_default();
        return Ok((false, Reason::OutOfScope, message));
    }
    let vault = match &p.key_vault {
        None => None,
        Some(id) => match vault_access::read(arm, id).await {
            Ok(Some(vault)) => Some((id.clone(), vault)),
            Ok(None) => {
                return Ok((
                    false,
                    Reason::NotFound,
                    format!("the workspace's key vault {id} (as ARM reports it) does not exist"),
                ));
            }
            Err(e) => {
                return Ok((
                    false,
                    e.reason(),
                    format!("reading the workspace's key vault {id}: {e}"),
                ));
            }
        },
    };
    let vault_rbac = vault
        .as_ref()
        .is_none_or(|(_, v)| vault_access::uses_rbac(v));
    let grants: Vec<Grant> = role_table(path, p, vault_rbac)
        .iter()
        .map(|(_, scope, role)| Grant::new(scope, role, principal))
        .collect();
    if let Err(e) = ledger.ensure_grants(ctx, ws, arm, &grants).await? {
        return Ok((
            false,
            e.reason(),
            format!("granting the workspace identity its roles: {e}"),
        ));
    }
    let mut message = format!(
        "{} role assignments for principal {principal}",
        grants.len()
    );
    match &vault {
        Some((id, vault)) if !vault_rbac => {
            if let Err((reason, why)) = vault_access::ensure(
                ctx,
                ws,
                ledger,
                arm,
                id,
                vault,
                principal,
                &vault_access::WORKSPACE_IDENTITY,
            )
            .await?
            {
                return Ok((false, reason, why));
            }
            message.push_str("; the key vault authorizes with access policies: an access policy with every permission but purge");
        }
        Some(_) => {
            message.push_str("; the key vault authorizes with Azure RBAC: Key Vault Administrator")
        }
        None => {}
    }
    Ok((true, Reason::RoleAssignmentsEnsured, message))
}

/// The principal of the workspace's primary user-assigned identity, as ARM reports it.
fn primary_principal(ws: &models::Workspace) -> Option<String> {
    let primary = ws.properties.primary_user_assigned_identity.clone()?;
    ws.identity
        .as_ref()?
        .user_assigned_identities
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&primary))
        .and_then(|(_, v)| v.principal_id.clone())
}

/// The workspace behaviour.
pub async fn reconcile(ws: &Workspace, ctx: &Context) -> Result<Outcome, Error> {
    let spec = &ws.spec;
    let namespace = ws.namespace().unwrap_or_default();
    let uid = ws.meta().uid.clone().unwrap_or_default();
    let signed = match resolve::sign_in(ctx, &namespace, &spec.credential_ref).await? {
        Ok(s) => s,
        Err(outcome) => return Ok(outcome),
    };
    if let Err(outcome) = signed.check(&spec_ids(spec), &namespace) {
        return Ok(outcome);
    }
    let arm = &signed.arm;
    let mut ledger = Ledger::of(ws);
    let path = spec.arm_id();
    let current: Option<models::Workspace> = match arm.get(&path, MACHINE_LEARNING).await {
        Ok(c) => c,
        Err(e) => {
            return Ok(
                azure_failure(&e, &format!("reading workspace {}", spec.workspace_name))
                    .signed_in(),
            );
        }
    };
    let manage = spec.management == Some(Management::Manage);
    let entry = AzureResource::new(AzureResourceKind::Workspace, &path);
    let written = match current {
        None if !manage => {
            return Ok(Outcome::not_ready(
                Reason::WorkspaceNotFound,
                format!("workspace {} does not exist in resource group {} of subscription {}: create it, or set management: Manage", spec.workspace_name, spec.resource_group, spec.subscription_id),
            )
            .signed_in()
            .requeue(Duration::from_secs(300)));
        }
        Some(current) if !manage => Ok(current),
        Some(current) if current.tags.get(OWNER_TAG) != Some(&uid) => {
            return Ok(Outcome::not_ready(
                Reason::AzureTargetConflict,
                format!("workspace {} already exists and was not created by this object: management: Manage only converges a workspace it created; use management: Adopt to read and report it", spec.workspace_name),
            )
            .signed_in());
        }
        Some(current) => {
            ledger.want(entry);
            if drifted(spec, &current) {
                arm.put_and_wait::<_, models::Workspace>(
                    &path,
                    MACHINE_LEARNING,
                    &desired(spec, Some(&current), &uid),
                )
                .await
            } else {
                Ok(current)
            }
        }
        None => {
            // Recorded first: a crash right after the PUT still leaves it to be cleaned up.
            ledger.record(ctx, ws, &[entry]).await?;
            arm.put_and_wait::<_, models::Workspace>(
                &path,
                MACHINE_LEARNING,
                &desired(spec, None, &uid),
            )
            .await
        }
    };
    let workspace = match written {
        Ok(w) => w,
        Err(e) => {
            return Ok(
                azure_failure(&e, &format!("writing workspace {}", spec.workspace_name))
                    .signed_in(),
            );
        }
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
            ConditionType::IdentityReady,
            true,
            Reason::IdentityMatches,
            "the workspace identity is the one declared".to_owned(),
        )
    } else {
        (ConditionType::IdentityReady, false, Reason::IdentityMismatch, "the workspace identity differs from spec.identity; with management: Adopt the operator does not change it".to_owned())
    };

    // The role table, for the primary user-assigned identity, on what the workspace really uses.
    let (roles_ok, roles_reason, roles_message) = match spec.role_assignments {
        Some(RoleAssignmentsMode::Ensure) => match primary_principal(&workspace) {
            None => (
                false,
                Reason::PrimaryIdentityUnknown,
                "the workspace reports no principal for its primary user-assigned identity"
                    .to_owned(),
            ),
            Some(principal) => {
                ensure_role_table(
                    ctx,
                    ws,
                    &signed,
                    &mut ledger,
                    &workspace,
                    &path,
                    &principal,
                    &namespace,
                )
                .await?
            }
        },
        _ => (
            true,
            Reason::NotRequested,
            "spec.roleAssignments is None".to_owned(),
        ),
    };
    // What the operator made earlier and the spec no longer wants (only after a complete pass).
    let left = if roles_ok {
        ledger.revoke(ctx, ws, arm, &ledger.stale()).await?
    } else {
        Vec::new()
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
        Outcome::not_ready(Reason::TargetConflict, conflict)
            .requeue(super::expiring::CONFLICT_RETRY)
    } else if !roles_ok {
        Outcome::not_ready(roles_reason, roles_message.clone())
    } else if !identity_ok {
        Outcome::not_ready(identity_cond.2, identity_cond.3.clone())
    } else {
        Outcome::ready(
            Reason::WorkspaceReady,
            format!(
                "workspace {} ({}) is {}",
                spec.workspace_name,
                p.workspace_id.as_deref().unwrap_or("?"),
                p.provisioning_state.as_deref().unwrap_or("present")
            ),
        )
    }
    .signed_in()
    .condition(
        identity_cond.0,
        identity_cond.1,
        identity_cond.2,
        identity_cond.3,
    )
    .condition(
        ConditionType::RoleAssignmentsReady,
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
    .field(
        "associatedResources",
        json!({
            "storageAccount": p.storage_account,
            "keyVault": p.key_vault,
            "containerRegistry": p.container_registry,
            "applicationInsights": p.application_insights,
        }),
    )
    .field("azureResources", ledger.field());
    let outcome = outcome.pending_revocation(&left);
    // Look again now and then: someone may change the workspace in Azure.
    let outcome = if outcome.requeue.is_none() {
        outcome.requeue(Duration::from_secs(600))
    } else {
        outcome
    };
    Ok(outcome)
}

/// Cleanup on delete: once no dependent still has cleanup to do with this Workspace, and per
/// `deletionPolicy`, remove what the record holds (role assignments; the workspace only if this
/// object created it). `Retain` leaves Azure as it is.
pub async fn cleanup(ws: &Workspace, ctx: &Context) -> Result<Cleanup, Error> {
    let namespace = ws.namespace().unwrap_or_default();
    let waiting =
        super::in_use::dependents(ctx, Some(&namespace), "Workspace", &ws.name_any()).await?;
    if !waiting.is_empty() {
        return Ok(Cleanup::Waiting(format!(
            "waiting for {} to finish their cleanup",
            waiting.join(", ")
        )));
    }
    if ws.spec.deletion_policy != Some(DeletionPolicy::Delete) || ws.record().is_empty() {
        return Ok(Cleanup::Done);
    }
    revocation::revoke_all(ctx, ws, &namespace, &ws.spec.credential_ref).await
}
