//! The `RegistryConnection` behaviour: pull credentials for an Azure Container Registry — the admin
//! user (`listCredentials`), or an AAD token of a managed identity or service principal exchanged for
//! an ACR refresh token (renewed from its own `exp`) — written as a `kubernetes.io/dockerconfigjson`
//! Secret, attached to ServiceAccounts, with the AcrPull / Managed Identity Operator grants and the
//! workspace's `ContainerRegistry` connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::credentials::{self, ResolveError};
use super::workspace::{self, azure_failure, credential_failure, ensure_role};
use super::{Context, Error, Outcome};
use crate::api::*;
use crate::azure::arm::ArmClient;
use crate::azure::models::ml_api_versions::{CONTAINER_REGISTRY, MACHINE_LEARNING};
use crate::azure::models::{self, api_versions};
use crate::azure::{AzureError, Cloud, Credential, acr};
use crate::outputs::{self, Expiry};
use crate::renewal::{self, Policy};
use crate::workload_identity::ServiceAccountAssertion;

const ACR_PULL: &str = "7f951dda-4ed3-4680-a7ca-43fe172d538d";
const MANAGED_IDENTITY_OPERATOR: &str = "f1a07417-d97a-45cb-824c-7a7467783830";
/// Admin passwords do not expire; the operator looks at them again this often.
const ADMIN_RECHECK: i64 = 3600;

/// The pulling identity: how to mint as it, and who it is.
struct Puller {
    credential: Option<Credential>,
    client_id: Option<String>,
    resource_id: Option<String>,
    principal_id: Option<String>,
}

/// The behaviour.
pub async fn reconcile(rc: &RegistryConnection, ctx: &Context) -> Result<Outcome, Error> {
    let spec = &rc.spec;
    let namespace = rc.namespace().unwrap_or_default();
    let workspace = match &spec.workspace_ref {
        Some(w) => match Api::<Workspace>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(&w.name)
            .await?
        {
            Some(ws) => Some(ws),
            None => {
                return Ok(Outcome::not_ready(
                    "WorkspaceNotFound",
                    format!("Workspace {namespace}/{} does not exist", w.name),
                )
                .requeue(Duration::from_secs(60)));
            }
        },
        None => None,
    };
    let reference = match (&workspace, &spec.credential_ref) {
        (_, Some(r)) => r.clone(),
        (Some(ws), None) => ws.spec.credential_ref.clone(),
        (None, None) => {
            return Ok(Outcome::not_ready(
                "InvalidSpec",
                "set workspaceRef or credentialRef",
            ));
        }
    };
    let resolved = match credentials::resolve_ref(ctx, &namespace, &reference).await {
        Ok(r) => r,
        Err(e) => return credential_failure(e),
    };
    let http = match ctx.azure.transport.client() {
        Ok(h) => h,
        Err(e) => return Ok(azure_failure(&e, "Azure transport")),
    };
    let tenant = resolved.credential.tenant_id().to_owned();
    let cloud = resolved.cloud.clone();
    let arm = ArmClient::new(
        http.clone(),
        &cloud.resource_manager,
        resolved.credential,
        ctx.azure.tokens.clone(),
        ctx.azure.budget.clone(),
    )
    .observed(ctx.azure.transport.observer.clone());

    let puller = match puller(ctx, rc, &namespace, &tenant, &cloud, &arm).await? {
        Ok(p) => p,
        Err(outcome) => return Ok(outcome),
    };

    // Grants: AcrPull for the puller; Managed Identity Operator for the workspace identity on it.
    let grants = spec.grants.clone().unwrap_or_default();
    let mut granted = 0;
    if grants.acr_pull {
        let Some(principal) = &puller.principal_id else {
            return Ok(Outcome::not_ready(
                "PrincipalUnknown",
                "grants.acrPull needs the pulling identity's principal id",
            )
            .requeue(Duration::from_secs(60)));
        };
        if let Err(e) = ensure_role(&arm, &spec.registry.resource_id, ACR_PULL, principal).await {
            return Ok(azure_failure(&e, "granting AcrPull").condition(
                "PermissionsVerified",
                false,
                e.reason(),
                e.to_string(),
            ));
        }
        granted += 1;
    }
    if grants.managed_identity_operator {
        let workspace_principal = match workspace_principal(workspace.as_ref(), &arm).await {
            Ok(p) => p,
            Err(e) => return Ok(azure_failure(&e, "reading the workspace identity")),
        };
        match (workspace_principal, &puller.resource_id) {
            (Some(principal), Some(identity)) => {
                if let Err(e) =
                    ensure_role(&arm, identity, MANAGED_IDENTITY_OPERATOR, &principal).await
                {
                    return Ok(
                        azure_failure(&e, "granting Managed Identity Operator").condition(
                            "PermissionsVerified",
                            false,
                            e.reason(),
                            e.to_string(),
                        ),
                    );
                }
                granted += 1;
            }
            _ => {
                return Ok(Outcome::not_ready(
                    "WorkspaceIdentityUnknown",
                    "grants.managedIdentityOperator needs the Workspace's identity (system-assigned, or its primary user-assigned one) and a user-assigned pulling identity",
                )
                .requeue(Duration::from_secs(60)));
            }
        }
    }

    // The workspace connection.
    let connection = match (&spec.workspace_connection, &workspace) {
        (Some(c), Some(ws)) => {
            let (Some(client_id), Some(resource_id)) = (&puller.client_id, &puller.resource_id)
            else {
                return Ok(Outcome::not_ready(
                    "IdentityUnknown",
                    "the workspace connection needs the pulling identity's client and resource ids",
                )
                .requeue(Duration::from_secs(60)));
            };
            let path = format!("{}/connections/{}", workspace::path(&ws.spec), c.name);
            let body = json!({"properties": {
                "category": "ContainerRegistry", "target": spec.registry.login_server, "authType": "ManagedIdentity",
                "credentials": {"clientId": client_id, "resourceId": resource_id},
            }});
            if let Err(e) = arm
                .put::<_, models::WorkspaceConnection>(&path, MACHINE_LEARNING, &body)
                .await
            {
                return Ok(azure_failure(
                    &e,
                    &format!("writing workspace connection {}", c.name),
                ));
            }
            Some(c.name.clone())
        }
        _ => None,
    };

    let conditions = |o: Outcome| {
        o.condition("CredentialResolved", true, "Resolved", "signed in")
            .condition(
                "PermissionsVerified",
                true,
                "RolesGranted",
                format!("{granted} role assignment(s) ensured"),
            )
            .condition(
                "ConnectionReady",
                true,
                if connection.is_some() {
                    "Connected"
                } else {
                    "NotRequested"
                },
                connection
                    .clone()
                    .map_or("no workspaceConnection".into(), |c| {
                        format!("workspace connection {c}")
                    }),
            )
    };
    match pull_secret(ctx, rc, &namespace, &tenant, &puller, &arm, &http).await? {
        Ok(outcome) => Ok(conditions(outcome)),
        Err(outcome) => Ok(conditions(outcome)),
    }
}

/// The workspace identity that image builds run as: its system-assigned principal, or else its
/// primary user-assigned identity's.
async fn workspace_principal(
    workspace: Option<&Workspace>,
    arm: &ArmClient,
) -> Result<Option<String>, AzureError> {
    let Some(ws) = workspace else { return Ok(None) };
    if let Some(principal) = ws.status.as_ref().and_then(|s| s.principal_id.clone()) {
        return Ok(Some(principal));
    }
    let Some(primary) = ws
        .spec
        .identity
        .as_ref()
        .and_then(|i| i.primary_user_assigned_identity.clone())
    else {
        return Ok(None);
    };
    let identity = arm
        .get::<models::UserAssignedIdentity>(&primary, api_versions::MANAGED_IDENTITY)
        .await?;
    Ok(identity
        .and_then(|i| i.properties)
        .and_then(|p| p.principal_id))
}

/// Who pulls, per `auth`.
async fn puller(
    ctx: &Context,
    rc: &RegistryConnection,
    namespace: &str,
    tenant: &str,
    cloud: &Cloud,
    arm: &ArmClient,
) -> Result<Result<Puller, Outcome>, Error> {
    let auth = &rc.spec.auth;
    match auth.type_ {
        RegistryAuthType::AdminUser => Ok(Ok(Puller {
            credential: None,
            client_id: None,
            resource_id: None,
            principal_id: None,
        })),
        RegistryAuthType::ServicePrincipal => {
            let Some(sp) = &auth.service_principal else {
                return Ok(Err(Outcome::not_ready(
                    "InvalidSpec",
                    "auth.servicePrincipal is missing",
                )));
            };
            let spec = CredentialSpec {
                tenant_id: tenant.to_owned(),
                cloud: None,
                endpoints: None,
                service_principal: Some(ServicePrincipalSource {
                    client_id: sp.client_id.clone(),
                    client_secret_ref: Some(sp.client_secret_ref.clone()),
                    client_certificate_ref: None,
                }),
                workload_identity: None,
                managed_identity: None,
                azure_cli: None,
            };
            let identity = format!("RegistryConnection/{namespace}/{}", rc.name_any());
            match credentials::resolve_spec(ctx, &spec, namespace, &identity).await {
                Ok(r) => Ok(Ok(Puller {
                    credential: Some(r.credential),
                    client_id: Some(sp.client_id.clone()),
                    resource_id: None,
                    principal_id: None,
                })),
                Err(ResolveError::Kube(e)) => Err(e.into()),
                Err(e) => {
                    Ok(Err(Outcome::not_ready(e.reason(), e.to_string())
                        .requeue(Duration::from_secs(120))))
                }
            }
        }
        RegistryAuthType::ManagedIdentity => {
            let Some(mi) = &auth.managed_identity else {
                return Ok(Err(Outcome::not_ready(
                    "InvalidSpec",
                    "auth.managedIdentity is missing",
                )));
            };
            if let Some(reference) = &mi.compute_identity_ref {
                let Some(ci) = Api::<ComputeIdentity>::namespaced(ctx.client.clone(), namespace)
                    .get_opt(&reference.name)
                    .await?
                else {
                    return Ok(Err(Outcome::not_ready(
                        "ComputeIdentityNotFound",
                        format!(
                            "ComputeIdentity {namespace}/{} does not exist",
                            reference.name
                        ),
                    )
                    .requeue(Duration::from_secs(60))));
                };
                let status = ci.status.clone().unwrap_or_default();
                let (Some(client_id), Some(principal_id)) =
                    (status.client_id.clone(), status.principal_id.clone())
                else {
                    return Ok(Err(Outcome::not_ready(
                        "ComputeIdentityPending",
                        format!("ComputeIdentity {} reports no identity yet", reference.name),
                    )
                    .requeue(Duration::from_secs(30))));
                };
                let account = ci
                    .spec
                    .federation
                    .as_ref()
                    .and_then(|f| f.service_accounts.first().cloned());
                let credential = match account {
                    Some(account) => {
                        let source = Arc::new(ServiceAccountAssertion::new(
                            ctx.client.clone(),
                            namespace,
                            &account,
                        ));
                        Some(
                            Credential::workload_identity(
                                format!("federated/{namespace}/{account}"),
                                cloud,
                                &ctx.azure.transport,
                                tenant,
                                &client_id,
                                source,
                            )
                            .map_err(|e| Error::Azure(e.to_string()))?,
                        )
                    }
                    None => None,
                };
                return Ok(Ok(Puller {
                    credential,
                    client_id: Some(client_id),
                    resource_id: ci.spec.identity.user_assigned_identities.first().cloned(),
                    principal_id: Some(principal_id),
                }));
            }
            // An identity named by ids: read its principal; minting as it needs a federated
            // ServiceAccount, which only a ComputeIdentity provides.
            let resource_id = mi.resource_id.clone().unwrap_or_default();
            let principal = match arm
                .get::<models::UserAssignedIdentity>(&resource_id, api_versions::MANAGED_IDENTITY)
                .await
            {
                Ok(i) => i.and_then(|i| i.properties).and_then(|p| p.principal_id),
                Err(e) => return Ok(Err(azure_failure(&e, "reading the pulling identity"))),
            };
            Ok(Ok(Puller {
                credential: None,
                client_id: mi.client_id.clone(),
                resource_id: Some(resource_id),
                principal_id: principal,
            }))
        }
    }
}

/// The dockerconfigjson Secret (and the ServiceAccounts' `imagePullSecrets`), minted only when due.
async fn pull_secret(
    ctx: &Context,
    rc: &RegistryConnection,
    namespace: &str,
    tenant: &str,
    puller: &Puller,
    arm: &ArmClient,
    http: &reqwest::Client,
) -> Result<Result<Outcome, Outcome>, Error> {
    let spec = &rc.spec;
    let now = ctx.azure.tokens.now();
    let force = outputs::force_refresh(rc);
    let fingerprint =
        outputs::fingerprint(&format!("{:?}|{}", spec.auth, spec.registry.login_server));
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let existing = secrets.get_opt(&spec.target.secret_name).await?;
    let (expires, renewal, note) = if let Some(still) =
        Expiry::reusable(existing.as_ref(), rc, &fingerprint, &force, now)
    {
        (still.expires, still.renewal, None)
    } else {
        let (config, expires, what) = match spec.auth.type_ {
            RegistryAuthType::AdminUser => {
                match arm
                    .post::<(), models::RegistryCredentials>(
                        &format!("{}/listCredentials", spec.registry.resource_id),
                        CONTAINER_REGISTRY,
                        None,
                    )
                    .await
                {
                    Ok(r) => {
                        let creds = r.body.ok_or_else(|| {
                            Error::Azure("listCredentials returned nothing".into())
                        })?;
                        let password = creds
                            .passwords
                            .first()
                            .map(|p| p.value.clone())
                            .unwrap_or_default();
                        let auth = base64::engine::general_purpose::STANDARD
                            .encode(format!("{}:{password}", creds.username));
                        let config = json!({"auths": {spec.registry.login_server.clone(): {"username": creds.username, "password": password, "auth": auth}}}).to_string();
                        (
                            config,
                            now + ADMIN_RECHECK,
                            "the registry's admin user credentials".to_owned(),
                        )
                    }
                    Err(e) => {
                        return Ok(Err(failed(
                            rc.status.as_ref().and_then(|s| s.failed_attempts),
                            &e,
                        )));
                    }
                }
            }
            _ => {
                let Some(credential) = &puller.credential else {
                    return Ok(Err(Outcome::not_ready(
                        "CannotMint",
                        "minting as an identity named by clientId/resourceId is not possible from the cluster: reference a ComputeIdentity with federation (computeIdentityRef) so the operator can sign in as it",
                    )
                    .condition("TokenIssued", false, "CannotMint", "no federated ServiceAccount for this identity")));
                };
                let issued_after = existing
                    .as_ref()
                    .and_then(Expiry::read)
                    .map_or(i64::MIN, |e| e.issued);
                let aad = match ctx
                    .azure
                    .tokens
                    .get_newer_than(credential, acr::ACR_AUDIENCE, issued_after)
                    .await
                {
                    Ok(t) => t,
                    Err(e) => {
                        return Ok(Err(failed(
                            rc.status.as_ref().and_then(|s| s.failed_attempts),
                            &e,
                        )));
                    }
                };
                match acr::exchange(http, &spec.registry.login_server, tenant, aad.secret()).await {
                    Ok(refresh) => {
                        let who = puller.client_id.clone().unwrap_or_default();
                        (
                            refresh.docker_config(&spec.registry.login_server),
                            refresh.expires_on,
                            format!("an ACR refresh token for identity {who}"),
                        )
                    }
                    Err(e) => {
                        return Ok(Err(failed(
                            rc.status.as_ref().and_then(|s| s.failed_attempts),
                            &e,
                        )));
                    }
                }
            }
        };
        let renewal = renewal::renewal_time(
            now,
            expires,
            Policy::default(),
            rc.meta().uid.as_deref().unwrap_or_default(),
        );
        let expiry = Expiry {
            expires,
            renewal,
            issued: now,
            fingerprint,
            force,
        };
        let data = BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            ByteString(config.into_bytes()),
        )]);
        if let Err(conflict) = outputs::apply_expiring(
            &ctx.client,
            rc,
            &spec.target.secret_name,
            "kubernetes.io/dockerconfigjson",
            data,
            &expiry,
        )
        .await?
        {
            return Ok(Err(Outcome::not_ready("TargetConflict", conflict)));
        }
        let note = format!(
            "{what} for {} written to Secret {}, valid until {}",
            spec.registry.login_server,
            spec.target.secret_name,
            renewal::rfc3339(expires)
        );
        (expires, renewal, Some(note))
    };

    // Attach the Secret to the named ServiceAccounts (added once; never removes others' entries).
    let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), namespace);
    for name in &spec.target.service_accounts {
        let Some(sa) = accounts.get_opt(name).await? else {
            return Ok(Err(Outcome::not_ready(
                "ServiceAccountNotFound",
                format!("ServiceAccount {namespace}/{name} does not exist"),
            )
            .requeue(Duration::from_secs(60))));
        };
        let mut pulls = sa.image_pull_secrets.clone().unwrap_or_default();
        if !pulls.iter().any(|p| p.name == spec.target.secret_name) {
            pulls.push(k8s_openapi::api::core::v1::LocalObjectReference {
                name: spec.target.secret_name.clone(),
            });
            accounts
                .patch(
                    name,
                    &PatchParams::default(),
                    // The resourceVersion makes this a compare-and-swap: two objects editing one
                    // ServiceAccount's list at once must not lose each other's entries.
                    &Patch::Merge(json!({"metadata": {"resourceVersion": sa.resource_version()}, "imagePullSecrets": pulls})),
                )
                .await?;
        }
    }
    let message = format!(
        "Secret {} lets pods pull from {} until {}",
        spec.target.secret_name,
        spec.registry.login_server,
        renewal::rfc3339(expires)
    );
    let mut outcome = Outcome::ready("PullSecretIssued", message.clone())
        .condition("TokenIssued", true, "Issued", message)
        .field("expiresAt", renewal::rfc3339(expires))
        .field("renewalTime", renewal::rfc3339(renewal))
        .failures_cleared()
        .requeue(Duration::from_secs((renewal - now).max(1) as u64));
    if let Some(note) = note {
        outcome = outcome.event("TokenIssued", note);
    }
    Ok(Ok(outcome))
}

fn failed(previous_attempts: Option<i64>, error: &AzureError) -> Outcome {
    Outcome::mint_failed(
        previous_attempts,
        "obtaining pull credentials",
        error.reason(),
        &error.to_string(),
    )
}

/// Cleanup on delete: the ServiceAccounts' references to the pull Secret and the workspace
/// connection this object made.
pub async fn cleanup(rc: &RegistryConnection, ctx: &Context) -> Result<(), Error> {
    let namespace = rc.namespace().unwrap_or_default();
    // The pull Secret goes with its owner; so do the references the operator added to it.
    let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &namespace);
    for name in &rc.spec.target.service_accounts {
        if let Some(sa) = accounts.get_opt(name).await? {
            let pulls = sa.image_pull_secrets.clone().unwrap_or_default();
            let kept: Vec<_> = pulls
                .iter()
                .filter(|p| p.name != rc.spec.target.secret_name)
                .cloned()
                .collect();
            if kept.len() != pulls.len() {
                accounts
                    .patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"resourceVersion": sa.resource_version()}, "imagePullSecrets": kept})),
                    )
                    .await?;
            }
        }
    }
    let Some(workspace_ref) = &rc.spec.workspace_ref else {
        return Ok(());
    };
    let Some(ws) = Api::<Workspace>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&workspace_ref.name)
        .await?
    else {
        return Ok(());
    };
    let reference = rc
        .spec
        .credential_ref
        .clone()
        .unwrap_or_else(|| ws.spec.credential_ref.clone());
    let Ok((arm, _, _)) = workspace::arm_for(ctx, &namespace, &reference).await? else {
        tracing::warn!(registry_connection = %rc.name_any(), "no usable credential; releasing without cleaning up in Azure");
        return Ok(());
    };
    if let Some(c) = &rc.spec.workspace_connection
        && let Err(e) = arm
            .delete(
                &format!("{}/connections/{}", workspace::path(&ws.spec), c.name),
                MACHINE_LEARNING,
            )
            .await
        && e.is_transient()
    {
        return Err(Error::Azure(e.to_string()));
    }
    Ok(())
}
