//! The `RegistryConnection` behaviour: pull credentials for an Azure Container Registry — the admin
//! user (`listCredentials`), or an AAD token of a managed identity or service principal exchanged for
//! an ACR refresh token (renewed from its own `exp`) — written as a `kubernetes.io/dockerconfigjson`
//! Secret, attached to ServiceAccounts, with the AcrPull / Managed Identity Operator grants and the
//! workspace's `ContainerRegistry` connection.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::credentials::{self, ResolveError};
use super::expiring::{Minted, Output};
use super::federation;
use super::ledger::{Ledger, OWNER_TAG};
use super::resolve::{self, Signed, azure_failure};
use super::revocation;
use super::{Cleanup, Context, Error, Outcome, Reconciled};
use crate::api::conditions::{ConditionType, Reason};
use crate::api::*;
use crate::azure::arm::ArmClient;
use crate::azure::authorization::{Grant, roles};
use crate::azure::models::ml_api_versions::{CONTAINER_REGISTRY, MACHINE_LEARNING};
use crate::azure::models::{self, api_versions};
use crate::azure::paths;
use crate::azure::{AzureError, Cloud, Credential, acr};
use crate::outputs::{self, Expiry};
use crate::renewal::{self, Policy};
use crate::workload_identity::federated_credential;

/// Admin passwords do not expire; the operator looks at them again this often.
const ADMIN_RECHECK: i64 = 3600;

/// The pulling identity: how to mint as it, and who it is.
struct Puller {
    credential: Option<Credential>,
    client_id: Option<String>,
    resource_id: Option<String>,
    principal_id: Option<String>,
    /// The ServiceAccount this object federates with the identity to mint as it (an identity named
    /// by ids); a ComputeIdentity's identity is federated by that object.
    federated_account: Option<String>,
}

impl Puller {
    fn nobody() -> Self {
        Self {
            credential: None,
            client_id: None,
            resource_id: None,
            principal_id: None,
            federated_account: None,
        }
    }
}

/// The status field naming the ServiceAccount an identity named by ids pulls through.
const SERVICE_ACCOUNT_FIELD: &str = "spec.auth.managedIdentity.serviceAccount";

/// Metadata key on a workspace connection: a hash of what it was written with, so an unchanged
/// connection is never written again.
const SPEC_HASH: &str = "aml-identity-operator-spec";

/// A workspace connection's ARM path.
fn connection_path(ws: &WorkspaceSpec, name: &str) -> String {
    paths::connection(&ws.arm_id(), name)
}

/// The output Secrets of the object (removed when it may no longer act).
fn outputs_of(rc: &RegistryConnection) -> Vec<&str> {
    vec![rc.spec.target.secret_name.as_str()]
}

/// Every ARM id the spec names, with its field.
fn scope_ids(rc: &RegistryConnection, workspace: Option<&Workspace>) -> Vec<(String, String)> {
    let spec = &rc.spec;
    let mut out = vec![(
        "spec.registry.resourceId".to_owned(),
        spec.registry.resource_id.clone(),
    )];
    if let Some(id) = spec
        .auth
        .managed_identity
        .as_ref()
        .and_then(|m| m.resource_id.as_ref())
    {
        out.push(("spec.auth.managedIdentity.resourceId".into(), id.clone()));
    }
    if let (Some(c), Some(ws)) = (&spec.workspace_connection, workspace) {
        out.push((
            format!(
                "spec.workspaceConnection.name (in Workspace {})",
                ws.name_any()
            ),
            connection_path(&ws.spec, &c.name),
        ));
    }
    out
}

/// The login server must be the named registry's own (`<name>.<registry suffix>` of the
/// credential's cloud): the identity's token is sent there.
fn login_server_matches(registry: &Registry, cloud: &Cloud) -> Result<(), Outcome> {
    let name = registry
        .resource_id
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let expected = format!("{name}.{}", cloud.container_registry_suffix);
    if registry.login_server.eq_ignore_ascii_case(&expected) {
        return Ok(());
    }
    let message = format!(
        "spec.registry.loginServer: {} is not the login server of registry {} (expected {expected}); nothing was requested in Azure for it",
        registry.login_server, registry.resource_id
    );
    Err(resolve::out_of_scope("the credential", message))
}

/// The behaviour.
pub async fn reconcile(rc: &RegistryConnection, ctx: &Context) -> Result<Outcome, Error> {
    let spec = &rc.spec;
    let namespace = rc.namespace().unwrap_or_default();
    let workspace = match &spec.workspace_ref {
        Some(w) => match ctx.workspace(&namespace, &w.name).await? {
            Some(ws) => Some(ws),
            None => {
                return Ok(Outcome::not_ready(
                    Reason::WorkspaceNotFound,
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
                Reason::InvalidSpec,
                "set workspaceRef or credentialRef",
            ));
        }
    };
    let signed = match resolve::sign_in(ctx, &namespace, &reference).await? {
        Ok(s) => s,
        Err(refused) => {
            return revocation::refused(ctx, rc, &reference, &outputs_of(rc), refused).await;
        }
    };
    if let Err(refused) = login_server_matches(&spec.registry, &signed.cloud)
        .and_then(|()| signed.check(&scope_ids(rc, workspace.as_ref()), &namespace))
    {
        return revocation::refused(ctx, rc, &reference, &outputs_of(rc), refused).await;
    }
    let arm = &signed.arm;
    let mut ledger = Ledger::of(rc);
    let uid = rc.meta().uid.clone().unwrap_or_default();

    let puller = match puller(ctx, rc, &namespace, &signed).await? {
        Ok(p) => p,
        Err(outcome) => {
            return revocation::refused(ctx, rc, &reference, &outputs_of(rc), outcome).await;
        }
    };

    // An identity named by ids pulls through a ServiceAccount of this namespace that this object
    // trusts on it.
    let federation = match (&puller.federated_account, &puller.resource_id) {
        (Some(account), Some(identity)) => {
            let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &namespace);
            if accounts.get_metadata_opt(account).await?.is_none() {
                return Ok(Outcome::not_ready(
                    Reason::ServiceAccountNotFound,
                    format!("{SERVICE_ACCOUNT_FIELD}: ServiceAccount {namespace}/{account} does not exist"),
                )
                .signed_in()
                .requeue(Duration::from_secs(60)));
            }
            let issuer = ctx.issuer().await?;
            if let Err(failure) = federation::federate(
                ctx,
                rc,
                &mut ledger,
                arm,
                identity,
                &issuer,
                std::slice::from_ref(account),
                SERVICE_ACCOUNT_FIELD,
            )
            .await?
            {
                return Ok(failure.signed_in());
            }
            (
                Reason::Federated,
                format!(
                    "ServiceAccount {namespace}/{account} trusted on identity {identity} with issuer {issuer}"
                ),
            )
        }
        _ => (
            Reason::NotRequested,
            "no identity this object federates (auth.managedIdentity.serviceAccount)".to_owned(),
        ),
    };

    // Grants: AcrPull for the puller; Managed Identity Operator for the workspace identity on it.
    let grant_spec = spec.grants.clone().unwrap_or_default();
    let mut grants = Vec::new();
    if grant_spec.acr_pull {
        let Some(principal) = &puller.principal_id else {
            return Ok(Outcome::not_ready(
                Reason::PrincipalUnknown,
                "grants.acrPull needs the pulling identity's principal id",
            )
            .requeue(Duration::from_secs(60)));
        };
        grants.push(Grant::new(
            &spec.registry.resource_id,
            roles::ACR_PULL,
            principal,
        ));
    }
    if grant_spec.managed_identity_operator {
        let workspace_principal = match workspace_principal(workspace.as_ref(), arm).await {
            Ok(p) => p,
            Err(e) => return Ok(azure_failure(&e, "reading the workspace identity")),
        };
        match (workspace_principal, &puller.resource_id) {
            (Some(principal), Some(identity)) => grants.push(Grant::new(
                identity,
                roles::MANAGED_IDENTITY_OPERATOR,
                principal,
            )),
            _ => {
                return Ok(Outcome::not_ready(
                    Reason::WorkspaceIdentityUnknown,
                    "grants.managedIdentityOperator needs the Workspace's identity (system-assigned, or its primary user-assigned one) and a user-assigned pulling identity",
                )
                .requeue(Duration::from_secs(60)));
            }
        }
    }
    if let Err(e) = ledger.ensure_grants(ctx, rc, arm, &grants).await? {
        return Ok(
            azure_failure(&e, "granting the pulling identity its roles").condition(
                ConditionType::PermissionsVerified,
                false,
                e.reason(),
                e.to_string(),
            ),
        );
    }
    let granted = grants.len();

    // The workspace connection.
    let connection = match (&spec.workspace_connection, &workspace) {
        (Some(c), Some(ws)) => {
            let (Some(client_id), Some(resource_id)) = (&puller.client_id, &puller.resource_id)
            else {
                return Ok(Outcome::not_ready(
                    Reason::IdentityUnknown,
                    "the workspace connection needs the pulling identity's client and resource ids",
                )
                .requeue(Duration::from_secs(60)));
            };
            let path = connection_path(&ws.spec, &c.name);
            let fingerprint = outputs::fingerprint(&format!(
                "{}|{client_id}|{resource_id}",
                spec.registry.login_server
            ));
            let body = json!({"properties": {
                "category": "ContainerRegistry", "target": spec.registry.login_server, "authType": "ManagedIdentity",
                "credentials": {"clientId": client_id, "resourceId": resource_id},
                "metadata": {OWNER_TAG: uid, SPEC_HASH: fingerprint},
            }});
            let current = match arm
                .get::<models::WorkspaceConnection>(&path, MACHINE_LEARNING)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    return Ok(azure_failure(
                        &e,
                        &format!("reading workspace connection {}", c.name),
                    ));
                }
            };
            let metadata = current.as_ref().map(|c| &c.properties.metadata);
            if metadata.is_some_and(|m| m.get(OWNER_TAG) != Some(&uid)) {
                return Ok(Outcome::not_ready(
                    Reason::AzureTargetConflict,
                    format!(
                        "workspace connection {} already exists in workspace {} and was not made by this object: choose another spec.workspaceConnection.name",
                        c.name, ws.spec.workspace_name
                    ),
                )
                .signed_in());
            }
            let entry = AzureResource::new(AzureResourceKind::WorkspaceConnection, &path);
            if metadata.is_some_and(|m| m.get(SPEC_HASH) == Some(&fingerprint)) {
                ledger.want(entry);
            } else {
                ledger.record(ctx, rc, &[entry]).await?;
                if let Err(e) = arm
                    .put::<_, models::WorkspaceConnection>(&path, MACHINE_LEARNING, &body)
                    .await
                {
                    return Ok(azure_failure(
                        &e,
                        &format!("writing workspace connection {}", c.name),
                    ));
                }
            }
            Some(c.name.clone())
        }
        _ => None,
    };

    let conditions = |o: Outcome| {
        o.signed_in()
            .condition(
                ConditionType::FederationValid,
                true,
                federation.0,
                federation.1.clone(),
            )
            .condition(
                ConditionType::PermissionsVerified,
                true,
                Reason::RolesGranted,
                format!("{granted} role assignment(s) ensured"),
            )
            .condition(
                ConditionType::ConnectionReady,
                true,
                if connection.is_some() {
                    Reason::Connected
                } else {
                    Reason::NotRequested
                },
                connection
                    .clone()
                    .map_or("no workspaceConnection".into(), |c| {
                        format!("workspace connection {c}")
                    }),
            )
    };
    // What the spec no longer asks for: grants, a renamed or dropped connection.
    let left = ledger.revoke(ctx, rc, arm, &ledger.stale()).await?;
    let outcome = match pull_secret(ctx, rc, &namespace, &signed, &puller).await? {
        Ok(outcome) | Err(outcome) => outcome,
    };
    Ok(conditions(outcome)
        .pending_revocation(&left)
        .field("azureResources", ledger.field()))
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
    signed: &Signed,
) -> Result<Result<Puller, Outcome>, Error> {
    let (tenant, cloud, arm) = (&signed.tenant, &signed.cloud, &signed.arm);
    let auth = &rc.spec.auth;
    match auth.type_ {
        RegistryAuthType::AdminUser => Ok(Ok(Puller::nobody())),
        RegistryAuthType::ServicePrincipal => {
            let Some(sp) = &auth.service_principal else {
                return Ok(Err(Outcome::not_ready(
                    Reason::InvalidSpec,
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
            // It signs in to the cloud of the credential this object acts with.
            match credentials::resolve_spec(ctx, &spec, cloud, namespace, &identity).await {
                Ok(r) => Ok(Ok(Puller {
                    credential: Some(r.credential),
                    client_id: Some(sp.client_id.clone()),
                    ..Puller::nobody()
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
                    Reason::InvalidSpec,
                    "auth.managedIdentity is missing",
                )));
            };
            if let Some(reference) = &mi.compute_identity_ref {
                let Some(ci) = Api::<ComputeIdentity>::namespaced(ctx.client.clone(), namespace)
                    .get_opt(&reference.name)
                    .await?
                else {
                    return Ok(Err(Outcome::not_ready(
                        Reason::ComputeIdentityNotFound,
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
                        Reason::ComputeIdentityPending,
                        format!("ComputeIdentity {} reports no identity yet", reference.name),
                    )
                    .requeue(Duration::from_secs(30))));
                };
                // The identity the ComputeIdentity uses must lie within this object's scopes too.
                let identity = ci.spec.identity.user_assigned_identities.first().cloned();
                if let Some(id) = &identity {
                    let field = format!(
                        "spec.auth.managedIdentity.computeIdentityRef (the identity of ComputeIdentity {})",
                        reference.name
                    );
                    if let Err(refused) = signed.check(&[(field, id.clone())], namespace) {
                        return Ok(Err(refused));
                    }
                }
                let account = ci
                    .spec
                    .federation
                    .as_ref()
                    .and_then(|f| f.service_accounts.first().cloned());
                let credential = match account {
                    Some(account) => Some(
                        federated_credential(
                            &ctx.client,
                            &ctx.azure.transport,
                            namespace,
                            &account,
                            cloud,
                            tenant,
                            &client_id,
                        )
                        .map_err(|e| Error::Azure(e.to_string()))?,
                    ),
                    None => None,
                };
                return Ok(Ok(Puller {
                    credential,
                    client_id: Some(client_id),
                    resource_id: identity,
                    principal_id: Some(principal_id),
                    federated_account: None,
                }));
            }
            // An identity named by ids: read it (the client id named must be its own; grants go
            // to its principal) and mint as it through the named ServiceAccount, which this
            // object federates with it.
            let resource_id = mi.resource_id.clone().unwrap_or_default();
            let named = mi.client_id.clone().unwrap_or_default();
            let identity = match arm
                .get::<models::UserAssignedIdentity>(&resource_id, api_versions::MANAGED_IDENTITY)
                .await
            {
                Ok(Some(i)) => i.properties.unwrap_or_default(),
                Ok(None) => {
                    return Ok(Err(Outcome::not_ready(
                        Reason::IdentityNotFound,
                        format!(
                            "spec.auth.managedIdentity.resourceId: identity {resource_id} does not exist"
                        ),
                    )
                    .requeue(Duration::from_secs(120))));
                }
                Err(e) => return Ok(Err(azure_failure(&e, "reading the pulling identity"))),
            };
            let actual = identity.client_id.as_deref().unwrap_or("none reported");
            if !actual.eq_ignore_ascii_case(&named) {
                return Ok(Err(Outcome::not_ready(
                    Reason::IdentityMismatch,
                    format!(
                        "spec.auth.managedIdentity.clientId: {named} is not the client id of identity {resource_id} ({actual}); write its own client id"
                    ),
                )
                .requeue(Duration::from_secs(600))));
            }
            let account = mi.service_account.clone().unwrap_or_default();
            let credential = federated_credential(
                &ctx.client,
                &ctx.azure.transport,
                namespace,
                &account,
                cloud,
                identity.tenant_id.as_deref().unwrap_or(tenant),
                &named,
            )
            .map_err(|e| Error::Azure(e.to_string()))?;
            Ok(Ok(Puller {
                credential: Some(credential),
                client_id: Some(named),
                resource_id: Some(resource_id),
                principal_id: identity.principal_id,
                federated_account: Some(account),
            }))
        }
    }
}

/// The dockerconfigjson Secret (and the ServiceAccounts' `imagePullSecrets`), minted only when due.
async fn pull_secret(
    ctx: &Context,
    rc: &RegistryConnection,
    namespace: &str,
    signed: &Signed,
    puller: &Puller,
) -> Result<Result<Outcome, Outcome>, Error> {
    let (arm, tenant, http) = (&signed.arm, &signed.tenant, &signed.http);
    let spec = &rc.spec;
    let now = ctx.azure.tokens.now();
    let policy = Policy::from_spec(
        spec.target.renew_before.as_deref(),
        spec.target.renew_before_percentage,
    );
    let fingerprint = outputs::fingerprint(&format!(
        "{:?}|{}{}",
        spec.auth,
        spec.registry.login_server,
        policy.fingerprint_part()
    ));
    // What the pull Secret really holds: the ACR refresh token's own `exp`; an admin password
    // never expires, so its recheck time may only be nearer than the operator's own interval.
    let admin = spec.auth.type_ == RegistryAuthType::AdminUser;
    let truth = |s: &Secret| {
        if admin {
            return Expiry::read(s)
                .map(|e| e.expires)
                .filter(|e| *e <= now + ADMIN_RECHECK);
        }
        let config: serde_json::Value =
            serde_json::from_str(outputs::data_text(s, ".dockerconfigjson")?).ok()?;
        let password = config["auths"][&spec.registry.login_server]["password"].as_str()?;
        crate::azure::jwt::claims(password)?.exp
    };
    let output = Output {
        owner: rc,
        secret_name: &spec.target.secret_name,
        secret_type: "kubernetes.io/dockerconfigjson",
        fingerprint,
        policy,
    };
    let mint = |issued_after: i64| async move {
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
                // Only a ComputeIdentity that federates no ServiceAccount leaves nobody to mint as.
                let Some(credential) = &puller.credential else {
                    return Ok(Err(Outcome::not_ready(
                    Reason::CannotMint,
                    "the referenced ComputeIdentity federates no ServiceAccount, so the operator cannot sign in as its identity: list one in its spec.federation.serviceAccounts, or name the identity by clientId, resourceId and serviceAccount here",
                )
                .condition(ConditionType::TokenIssued, false, Reason::CannotMint, "no federated ServiceAccount for this identity")));
                };
                let aad = match ctx
                    .azure
                    .tokens
                    .get_newer_than(
                        credential,
                        &signed.cloud.container_registry_audience,
                        issued_after,
                    )
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
        Ok(Ok(Minted {
            data: BTreeMap::from([(
                ".dockerconfigjson".to_owned(),
                ByteString(config.into_bytes()),
            )]),
            obtained: now,
            expires,
            what: format!("{what} for {}", spec.registry.login_server),
        }))
    };
    let written = match output.refresh(ctx, now, truth, mint).await? {
        Ok(w) => w,
        Err(failed) => return Ok(Err(failed)),
    };
    let (expires, renewal) = (written.expiry().expires, written.expiry().renewal);

    // Attach the Secret to the named ServiceAccounts: each entry recorded before it is added, so
    // only entries this object added are ever taken away again.
    let mut added = rc
        .status
        .as_ref()
        .map(|s| s.image_pull_secrets_added.clone())
        .unwrap_or_default();
    let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), namespace);
    for name in &spec.target.service_accounts {
        let Some(sa) = accounts.get_opt(name).await? else {
            return Ok(Err(Outcome::not_ready(
                Reason::ServiceAccountNotFound,
                format!("ServiceAccount {namespace}/{name} does not exist"),
            )
            .requeue(Duration::from_secs(60))));
        };
        let mut pulls = sa.image_pull_secrets.clone().unwrap_or_default();
        if !pulls.iter().any(|p| p.name == spec.target.secret_name) {
            let entry = ImagePullSecretAdded {
                service_account: name.clone(),
                secret_name: spec.target.secret_name.clone(),
            };
            if !added.contains(&entry) {
                added.push(entry);
                record_pull_secrets(ctx, rc, &added).await?;
            }
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
    // Entries added earlier that the spec no longer asks for (a dropped ServiceAccount, a renamed
    // Secret) are taken away again.
    let wanted = |e: &ImagePullSecretAdded| {
        e.secret_name == spec.target.secret_name
            && spec.target.service_accounts.contains(&e.service_account)
    };
    let stale: Vec<ImagePullSecretAdded> = added.iter().filter(|e| !wanted(e)).cloned().collect();
    for entry in &stale {
        detach(&accounts, entry).await?;
    }
    added.retain(wanted);
    let message = format!(
        "Secret {} lets pods pull from {} until {}",
        spec.target.secret_name,
        spec.registry.login_server,
        renewal::rfc3339(expires)
    );
    let outcome = Outcome::ready(Reason::PullSecretIssued, message.clone())
        .condition(ConditionType::TokenIssued, true, Reason::Issued, message)
        .field("expiresAt", renewal::rfc3339(expires))
        .field("renewalTime", renewal::rfc3339(renewal))
        .failures_cleared()
        .field("imagePullSecretsAdded", json!(added))
        .requeue(Duration::from_secs((renewal - now).max(1) as u64));
    Ok(Ok(written.report(outcome)))
}

fn failed(previous_attempts: Option<i64>, error: &AzureError) -> Outcome {
    Outcome::mint_failed(
        previous_attempts,
        "obtaining pull credentials",
        error.reason(),
        &error.to_string(),
    )
}

/// Writes the record of `imagePullSecrets` entries now, before the next one is added.
async fn record_pull_secrets(
    ctx: &Context,
    rc: &RegistryConnection,
    added: &[ImagePullSecretAdded],
) -> Result<(), Error> {
    let api = Api::<RegistryConnection>::namespaced(
        ctx.client.clone(),
        &rc.namespace().unwrap_or_default(),
    );
    api.patch_status(
        &rc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"imagePullSecretsAdded": added}})),
    )
    .await?;
    Ok(())
}

/// Takes one entry this object added out of a ServiceAccount's `imagePullSecrets`.
async fn detach(accounts: &Api<ServiceAccount>, entry: &ImagePullSecretAdded) -> Result<(), Error> {
    let Some(sa) = accounts.get_opt(&entry.service_account).await? else {
        return Ok(());
    };
    let pulls = sa.image_pull_secrets.clone().unwrap_or_default();
    let kept: Vec<_> = pulls
        .iter()
        .filter(|p| p.name != entry.secret_name)
        .cloned()
        .collect();
    if kept.len() != pulls.len() {
        accounts
            .patch(
                &entry.service_account,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"resourceVersion": sa.resource_version()}, "imagePullSecrets": kept})),
            )
            .await?;
    }
    Ok(())
}

/// Cleanup on delete: the `imagePullSecrets` entries this object added, then what it made in
/// Azure (grants, the workspace connection), from the record.
pub async fn cleanup(rc: &RegistryConnection, ctx: &Context) -> Result<Cleanup, Error> {
    let namespace = rc.namespace().unwrap_or_default();
    let accounts = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &namespace);
    for entry in rc.status.iter().flat_map(|s| &s.image_pull_secrets_added) {
        detach(&accounts, entry).await?;
    }
    if rc.record().is_empty() {
        return Ok(Cleanup::Done);
    }
    let reference = match (&rc.spec.credential_ref, &rc.spec.workspace_ref) {
        (Some(r), _) => r.clone(),
        (None, Some(w)) => match resolve::find_workspace(ctx, &namespace, &w.name).await? {
            Ok(ws) => ws.spec.credential_ref,
            Err(_) => {
                return Err(Error::Azure(format!(
                    "Workspace {namespace}/{} is gone: no credential to remove what this object made in Azure",
                    w.name
                )));
            }
        },
        (None, None) => return Ok(Cleanup::Done),
    };
    revocation::revoke_all(ctx, rc, &namespace, &reference).await
}
