//! The `ComputeIdentity` behaviour: the compute's identity in Azure (created when missing, patched
//! onto the compute when managed), its grants, federated credentials for the listed ServiceAccounts
//! with this cluster's issuer, and the token Secret pods mount — renewed from the tokens' real
//! expiry, never re-minted while still valid (a restart reads the Secret back), one Entra request per
//! identity and audience however many objects share them.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::expiring::{Minted, Output};
use super::federation;
use super::ledger::{Ledger, OWNER_TAG};
use super::resolve::azure_failure;
use super::revocation;
use super::vault_access;
use super::{Cleanup, Context, Error, Outcome};
use crate::api::conditions::{ConditionType, Reason};
use crate::api::*;
use crate::azure::authorization::{Grant, roles};
use crate::azure::models::ml_api_versions::MACHINE_LEARNING;
use crate::azure::models::{self, api_versions};
use crate::azure::paths;
use crate::azure::{AzureError, Token};
use crate::outputs::{self};
use crate::renewal::{self, Policy};
use crate::workload_identity::federated_credential;

/// Secret key for a token of `audience`: its host, e.g. `storage.azure.com.token`.
pub fn audience_key(audience: &str) -> String {
    let host = audience
        .split("://")
        .nth(1)
        .unwrap_or(audience)
        .trim_end_matches('/');
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The compute's ARM path.
fn compute_path(ws: &WorkspaceSpec, spec: &ComputeIdentitySpec) -> String {
    paths::compute(&ws.arm_id(), &spec.compute_name)
}

/// Every ARM id the object would touch, with the field that names it.
fn scope_ids(ci: &ComputeIdentity, ws: &Workspace) -> Vec<(String, String)> {
    let spec = &ci.spec;
    let mut out = Vec::new();
    if spec.manage_compute || spec.identity.type_ == ComputeIdentityType::SystemAssigned {
        out.push((
            format!("spec.computeName (in Workspace {})", ws.name_any()),
            compute_path(&ws.spec, spec),
        ));
    }
    for (i, id) in spec.identity.user_assigned_identities.iter().enumerate() {
        out.push((
            format!("spec.identity.userAssignedIdentities[{i}]"),
            id.clone(),
        ));
    }
    if let Some(g) = &spec.grants {
        if g.acr_pull
            && let Some(registry) = registry_of(ws)
        {
            out.push((
                format!(
                    "spec.grants.acrPull (Workspace {} spec.associatedResources.containerRegistry)",
                    ws.name_any()
                ),
                registry,
            ));
        }
        for (i, s) in g.storage_blob_data_reader.iter().enumerate() {
            out.push((format!("spec.grants.storageBlobDataReader[{i}]"), s.clone()));
        }
        for (i, s) in g.key_vault_secrets_user.iter().enumerate() {
            out.push((format!("spec.grants.keyVaultSecretsUser[{i}]"), s.clone()));
        }
    }
    out
}

fn registry_of(ws: &Workspace) -> Option<String> {
    ws.spec
        .associated_resources
        .as_ref()
        .and_then(|r| r.container_registry.clone())
}

/// The output Secrets of the object (removed when it may no longer act).
fn outputs_of(ci: &ComputeIdentity) -> Vec<&str> {
    ci.spec
        .token_secret
        .iter()
        .map(|t| t.name.as_str())
        .collect()
}

/// The behaviour.
/// What a complete pass depends on besides Azure: this object's spec and its workspace's.
fn settled_for(ci: &ComputeIdentity, ws: &Workspace) -> String {
    outputs::fingerprint(&format!(
        "{}|{}|{}",
        ci.meta().generation.unwrap_or_default(),
        ws.meta().uid.as_deref().unwrap_or_default(),
        ws.meta().generation.unwrap_or_default()
    ))
}

/// An object that is Ready from a complete pass over the same spec and workspace, with a token
/// Secret that is still good, needs nothing from Azure: the identity, compute, grants and
/// federation are looked at again by the complete pass at renewal (or when either spec changes),
/// which is also when drift made in Azure is repaired. `None`: run the complete pass.
async fn still_settled(
    ci: &ComputeIdentity,
    ctx: &Context,
    ws: &Workspace,
) -> Result<Option<Outcome>, Error> {
    let (Some(tokens), Some(status)) = (&ci.spec.token_secret, &ci.status) else {
        return Ok(None);
    };
    let Some(client_id) = &status.client_id else {
        return Ok(None);
    };
    let ready = status.common.conditions.iter().find(|c| {
        c.type_ == ConditionType::Ready.as_str()
            && c.status == "True"
            && c.observed_generation == ci.meta().generation
    });
    let Some((ready, reason)) = ready.and_then(|c| Some((c, Reason::parse(&c.reason)?))) else {
        return Ok(None);
    };
    if ci.spec.identity.type_ != ComputeIdentityType::UserAssigned
        || status.settled_for.as_deref() != Some(settled_for(ci, ws).as_str())
    {
        return Ok(None);
    }
    let now = ctx.azure.tokens.now();
    let endpoint = endpoint_env(ctx, ci);
    let (_, still) = token_output(ctx, ci, tokens, client_id)
        .check(ctx, now, |s| tokens_expire(tokens, s, endpoint.as_ref()))
        .await?;
    Ok(still.ok().map(|still| {
        Outcome::ready(reason, ready.message.clone())
            .field("expiresAt", renewal::rfc3339(still.expires))
            .field("renewalTime", renewal::rfc3339(still.renewal))
            .requeue(Duration::from_secs((still.renewal - now).max(1) as u64))
    }))
}

/// The token Secret of `ci`, minted for `client_id`.
fn token_output<'a>(
    ctx: &Context,
    ci: &'a ComputeIdentity,
    spec: &'a TokenSecret,
    client_id: &str,
) -> Output<'a, ComputeIdentity> {
    Output {
        owner: ci,
        secret_name: &spec.name,
        secret_type: "Opaque",
        fingerprint: tokens_fingerprint(client_id, spec, ctx.msi.as_ref()),
        policy: renewal_policy(spec),
    }
}

/// `MSI_ENDPOINT` and `MSI_SECRET` of `ci`'s token Secret, when it asks for the endpoint and this
/// operator serves it.
fn endpoint_env(ctx: &Context, ci: &ComputeIdentity) -> Option<(String, String)> {
    let asks = ci
        .spec
        .token_secret
        .as_ref()
        .is_some_and(|t| t.msi_endpoint);
    let issuer = ctx.msi.as_ref().filter(|_| asks)?;
    Some((issuer.url.clone(), issuer.key.secret_of(ci)))
}

/// When a token Secret is renewed.
fn renewal_policy(spec: &TokenSecret) -> Policy {
    Policy::from_spec(spec.renew_before.as_deref(), spec.renew_before_percentage)
}

/// What a token Secret was made for: the identity, the audiences, the renewal settings and, with
/// the endpoint, its URL and key (a new key rewrites every `MSI_SECRET`).
fn tokens_fingerprint(
    client_id: &str,
    spec: &TokenSecret,
    msi: Option<&crate::msi::Issuer>,
) -> String {
    let endpoint = match msi.filter(|_| spec.msi_endpoint) {
        Some(issuer) => format!("|{}|{}", issuer.url, issuer.key.id),
        None => String::new(),
    };
    outputs::fingerprint(&format!(
        "{}|{}|{:?}|{:?}{endpoint}",
        client_id,
        spec.audiences.join(","),
        spec.renew_before,
        spec.renew_before_percentage
    ))
}

/// The earliest `exp` of the tokens a Secret really holds, one per audience; `None` also when its
/// `MSI_ENDPOINT` or `MSI_SECRET` is not what `endpoint` says (edited, or rotated by a
/// force-refresh), so the Secret is written again.
fn tokens_expire(
    spec: &TokenSecret,
    secret: &Secret,
    endpoint: Option<&(String, String)>,
) -> Option<i64> {
    if let Some((url, msi_secret)) = endpoint {
        let holds = |key: &str, want: &str| {
            outputs::data_text(secret, key).is_some_and(|v| crate::msi::key::same(want, v))
        };
        if !holds("MSI_ENDPOINT", url) || !holds("MSI_SECRET", msi_secret) {
            return None;
        }
    }
    spec.audiences
        .iter()
        .map(|a| {
            outputs::data_text(secret, &format!("{}.token", audience_key(a)))
                .and_then(crate::azure::jwt::claims)
                .and_then(|c| c.exp)
        })
        .collect::<Option<Vec<i64>>>()?
        .into_iter()
        .min()
}

pub async fn reconcile(ci: &ComputeIdentity, ctx: &Context) -> Result<Outcome, Error> {
    let spec = &ci.spec;
    let namespace = ci.namespace().unwrap_or_default();
    let uid = ci.meta().uid.clone().unwrap_or_default();
    let (ws, signed) = match revocation::workspace_for(
        ctx,
        ci,
        &spec.workspace_ref.name,
        &outputs_of(ci),
    )
    .await?
    {
        Ok(found) => found,
        Err(outcome) => return Ok(outcome),
    };
    let reference = ws.spec.credential_ref.clone();
    let audiences = spec.token_secret.iter().flat_map(|t| {
        t.audiences
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("spec.tokenSecret.audiences[{i}]"), a.as_str()))
    });
    if let Err(refused) = signed
        .check(&scope_ids(ci, &ws), &namespace)
        .and_then(|()| signed.check_audiences(audiences))
    {
        return revocation::refused(ctx, ci, &reference, &outputs_of(ci), refused).await;
    }
    if let Some(settled) = still_settled(ci, ctx, &ws).await? {
        return Ok(settled);
    }
    let (arm, cloud) = (&signed.arm, &signed.cloud);
    let mut ledger = Ledger::of(ci);
    let user = spec.identity.type_ == ComputeIdentityType::UserAssigned;

    // 1. The identity: user-assigned identities exist (or are created), the compute carries them.
    let mut default_identity: Option<models::UserAssignedIdentity> = None;
    let mut identities: Vec<IdentityStatus> = Vec::new();
    if user {
        for id in &spec.identity.user_assigned_identities {
            let entry = AzureResource::new(AzureResourceKind::UserAssignedIdentity, id);
            // Shared by every object naming the identity: one read per credential a minute.
            let found = match arm
                .get_recent::<models::UserAssignedIdentity>(id, api_versions::MANAGED_IDENTITY)
                .await
            {
                Ok(f) => f,
                Err(e) => return Ok(azure_failure(&e, &format!("reading identity {id}"))),
            };
            let identity = match (found, &spec.create_if_missing) {
                (Some(i), _) => {
                    ledger.want(entry);
                    i
                }
                (None, Some(create)) => {
                    let body = models::UserAssignedIdentity {
                        location: create.location.clone(),
                        tags: BTreeMap::from([(OWNER_TAG.to_owned(), uid.clone())]),
                        ..Default::default()
                    };
                    // Recorded before it exists: a crash after the PUT cannot orphan it.
                    ledger.record(ctx, ci, &[entry]).await?;
                    match arm
                        .put::<_, models::UserAssignedIdentity>(
                            id,
                            api_versions::MANAGED_IDENTITY,
                            &body,
                        )
                        .await
                    {
                        Ok(r) => r.body.unwrap_or(body),
                        Err(e) => return Ok(azure_failure(&e, &format!("creating identity {id}"))),
                    }
                }
                (None, None) => {
                    return Ok(Outcome::not_ready(Reason::IdentityNotFound, format!("user-assigned identity {id} does not exist: create it, or set spec.createIfMissing")).requeue(Duration::from_secs(300)));
                }
            };
            let props = identity.properties.clone().unwrap_or_default();
            identities.push(IdentityStatus {
                resource_id: id.clone(),
                client_id: props.client_id.unwrap_or_default(),
                tenant_id: props.tenant_id.unwrap_or_default(),
            });
            default_identity.get_or_insert(identity);
        }
    }
    let compute_path = compute_path(&ws.spec, spec);
    let mut system_principal = None;
    if spec.manage_compute || !user {
        let compute = match arm
            .get::<models::Compute>(&compute_path, MACHINE_LEARNING)
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Ok(Outcome::not_ready(
                    Reason::ComputeNotFound,
                    format!(
                        "compute {} does not exist in workspace {}",
                        spec.compute_name, ws.spec.workspace_name
                    ),
                )
                .requeue(Duration::from_secs(300)));
            }
            Err(e) => {
                return Ok(azure_failure(
                    &e,
                    &format!("reading compute {}", spec.compute_name),
                ));
            }
        };
        let want_type = if user {
            "UserAssigned"
        } else {
            "SystemAssigned"
        };
        let have: Vec<String> = compute
            .identity
            .as_ref()
            .map(|i| {
                i.user_assigned_identities
                    .keys()
                    .map(|k| k.to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        let drift = compute
            .identity
            .as_ref()
            .is_none_or(|i| i.type_ != want_type)
            || spec.identity.user_assigned_identities.len() != have.len()
            || spec
                .identity
                .user_assigned_identities
                .iter()
                .any(|id| !have.contains(&id.to_ascii_lowercase()));
        let compute = if spec.manage_compute && drift {
            let uais: serde_json::Map<String, serde_json::Value> = spec
                .identity
                .user_assigned_identities
                .iter()
                .map(|id| (id.clone(), json!({})))
                .collect();
            let body = if user {
                json!({"identity": {"type": want_type, "userAssignedIdentities": uais}})
            } else {
                json!({"identity": {"type": want_type}})
            };
            match arm
                .patch_and_wait::<_, models::Compute>(&compute_path, MACHINE_LEARNING, &body)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    return Ok(azure_failure(
                        &e,
                        &format!("setting the identity of compute {}", spec.compute_name),
                    ));
                }
            }
        } else {
            compute
        };
        system_principal = compute.identity.and_then(|i| i.principal_id);
    }
    let (client_id, principal_id) = match &default_identity {
        Some(i) => {
            let p = i.properties.clone().unwrap_or_default();
            (p.client_id, p.principal_id)
        }
        None => (None, system_principal.clone()),
    };
    let Some(principal) = principal_id.clone() else {
        return Ok(Outcome::not_ready(
            Reason::IdentityPending,
            "the compute reports no principal for its identity yet",
        )
        .requeue(Duration::from_secs(30)));
    };

    // 2. Grants.
    let mut grants: Vec<Grant> = Vec::new();
    let mut policies = Vec::new();
    if let Some(g) = &spec.grants {
        if g.acr_pull {
            match registry_of(&ws) {
                Some(registry) => grants.push(Grant::new(registry, roles::ACR_PULL, &principal)),
                None => return Ok(Outcome::not_ready(Reason::RegistryUnknown, "grants.acrPull needs the Workspace's spec.associatedResources.containerRegistry").requeue(Duration::from_secs(300))),
            }
        }
        grants.extend(
            g.storage_blob_data_reader
                .iter()
                .map(|s| Grant::new(s, roles::STORAGE_BLOB_DATA_READER, &principal)),
        );
        // Key Vault Secrets User on an RBAC vault; on an access-policy vault, the documents'
        // access policy (get on secrets), which cannot be narrowed to one secret.
        for (i, scope) in g.key_vault_secrets_user.iter().enumerate() {
            let field = format!("spec.grants.keyVaultSecretsUser[{i}]");
            let vault_id = vault_access::vault_of(scope);
            // A grant scoped to a secret in a vault beyond the credential's scopes: the vault's
            // model cannot be read, and the role on the secret is all that can be asked for.
            if !arm.ceiling().admits(vault_id) {
                grants.push(Grant::new(scope, roles::KEY_VAULT_SECRETS_USER, &principal));
                continue;
            }
            let vault = match vault_access::read(arm, vault_id).await {
                Ok(Some(vault)) => vault,
                Ok(None) => {
                    return Ok(Outcome::not_ready(
                        Reason::NotFound,
                        format!("{field}: key vault {vault_id} does not exist"),
                    )
                    .signed_in()
                    .requeue(Duration::from_secs(300)));
                }
                Err(e) => {
                    return Ok(
                        azure_failure(&e, &format!("reading key vault {vault_id}")).signed_in()
                    );
                }
            };
            if vault_access::uses_rbac(&vault) {
                grants.push(Grant::new(scope, roles::KEY_VAULT_SECRETS_USER, &principal));
            } else if vault_id != scope {
                let message = format!(
                    "{field}: key vault {vault_id} authorizes with access policies, which cannot be limited to one secret: name the vault to allow get on all its secrets, or switch the vault to Azure RBAC"
                );
                return Ok(
                    Outcome::not_ready(Reason::AccessPolicyIncomplete, message.clone())
                        .signed_in()
                        .condition(
                            ConditionType::PermissionsVerified,
                            false,
                            Reason::AccessPolicyIncomplete,
                            message,
                        )
                        .requeue(Duration::from_secs(600)),
                );
            } else {
                policies.push((vault_id.to_owned(), vault));
            }
        }
    }
    if let Err(e) = ledger.ensure_grants(ctx, ci, arm, &grants).await? {
        return Ok(
            azure_failure(&e, "granting the compute identity its roles").condition(
                ConditionType::PermissionsVerified,
                false,
                e.reason(),
                e.to_string(),
            ),
        );
    }
    for (vault_id, vault) in &policies {
        if let Err((reason, message)) = vault_access::ensure(
            ctx,
            ci,
            &mut ledger,
            arm,
            vault_id,
            vault,
            &principal,
            &vault_access::SECRETS_READER,
        )
        .await?
        {
            return Ok(Outcome::not_ready(reason, message.clone())
                .signed_in()
                .condition(ConditionType::PermissionsVerified, false, reason, message)
                .requeue(Duration::from_secs(600)));
        }
    }
    let permissions = (
        ConditionType::PermissionsVerified,
        true,
        Reason::RolesGranted,
        format!(
            "{} role assignments and {} key vault access policies for principal {principal}",
            grants.len(),
            policies.len()
        ),
    );

    // 3. Federation and the token Secret (user-assigned only).
    let mut outcome_fields = serde_json::Map::new();
    outcome_fields.insert("clientId".into(), json!(client_id));
    outcome_fields.insert("principalId".into(), json!(principal_id));
    outcome_fields.insert("identities".into(), json!(identities));
    if !user {
        let left = ledger.revoke(ctx, ci, arm, &ledger.stale()).await?;
        outcome_fields.insert("azureResources".into(), ledger.field());
        let mut outcome = Outcome::ready(Reason::SystemAssignedReported, format!("compute {} uses its system-assigned identity (principal {principal})", spec.compute_name)).pending_revocation(&left)
            .signed_in()
            .condition(permissions.0, permissions.1, permissions.2, permissions.3)
            .condition(ConditionType::TokenIssued,
                false,
                Reason::SystemAssignedIdentity,
                "a system-assigned identity can be used only from inside its compute; use a UserAssigned identity with federation for a token Secret",
            );
        outcome.fields = outcome_fields;
        return Ok(outcome.requeue(Duration::from_secs(600)));
    }
    let Some(identity) = default_identity else {
        return Ok(Outcome::not_ready(
            Reason::IdentityPending,
            "spec.identity.userAssignedIdentities is empty",
        ));
    };
    let Some(identity_id) = spec.identity.user_assigned_identities.first().cloned() else {
        return Ok(Outcome::not_ready(
            Reason::IdentityPending,
            "spec.identity.userAssignedIdentities is empty",
        ));
    };
    let client_id = client_id.unwrap_or_default();
    let issuer = ctx.issuer().await?;
    let accounts = spec
        .federation
        .as_ref()
        .map(|f| f.service_accounts.clone())
        .unwrap_or_default();
    // The endpoint may mint any listed identity; a token Secret holds the default one only.
    let serves_all = spec.token_secret.as_ref().is_some_and(|t| t.msi_endpoint);
    let federated: &[String] = if serves_all {
        &spec.identity.user_assigned_identities
    } else {
        std::slice::from_ref(&identity_id)
    };
    for identity_id in federated {
        if let Err(failure) = federation::federate(
            ctx,
            ci,
            &mut ledger,
            arm,
            identity_id,
            &issuer,
            &accounts,
            "spec.federation.serviceAccounts",
        )
        .await?
        {
            return Ok(failure.condition(
                ConditionType::PermissionsVerified,
                permissions.1,
                permissions.2,
                permissions.3.clone(),
            ));
        }
    }
    let federation = (
        ConditionType::FederationValid,
        true,
        Reason::Federated,
        format!(
            "{} ServiceAccount(s) trusted with issuer {issuer}",
            accounts.len()
        ),
    );
    // What the spec no longer asks for (a complete pass wants everything else).
    let left = ledger.revoke(ctx, ci, arm, &ledger.stale()).await?;
    outcome_fields.insert("azureResources".into(), ledger.field());
    let base = |ready: Outcome| {
        let mut o = ready
            .pending_revocation(&left)
            .signed_in()
            .condition(
                federation.0,
                federation.1,
                federation.2,
                federation.3.clone(),
            )
            .condition(
                permissions.0,
                permissions.1,
                permissions.2,
                permissions.3.clone(),
            );
        o.fields.extend(outcome_fields.clone());
        o.field("settledFor", settled_for(ci, &ws))
    };
    let Some(token_secret) = &spec.token_secret else {
        return Ok(base(
            Outcome::ready(
                Reason::IdentityReady,
                format!("identity {client_id} is ready"),
            )
            .condition(
                ConditionType::TokenIssued,
                true,
                Reason::NotRequested,
                "no tokenSecret",
            ),
        )
        .requeue(Duration::from_secs(600)));
    };
    if token_secret.msi_endpoint && ctx.msi.is_none() {
        return Ok(base(
            Outcome::not_ready(
                Reason::EndpointNotServed,
                "spec.tokenSecret.msiEndpoint is set, but this operator does not serve the managed identity endpoint: start it with --msi-endpoint-addr and --msi-endpoint-url (Helm: msiEndpoint.enabled=true), or unset msiEndpoint",
            )
            .condition(
                ConditionType::TokenIssued,
                false,
                Reason::EndpointNotServed,
                "the operator does not serve the managed identity endpoint",
            ),
        )
        .requeue(Duration::from_secs(600)));
    }
    let tenant = identity
        .properties
        .as_ref()
        .and_then(|p| p.tenant_id.clone())
        .unwrap_or_default();
    let mint = TokenMint {
        ctx,
        ci,
        spec: token_secret,
        namespace: &namespace,
        client_id: &client_id,
        tenant: &tenant,
        service_account: accounts.first().cloned().unwrap_or_default(),
        cloud,
    };
    Ok(match mint.run().await? {
        Ok(tokens) => base(tokens),
        Err(failure) => base(failure),
    })
}

struct TokenMint<'a> {
    ctx: &'a Context,
    ci: &'a ComputeIdentity,
    spec: &'a TokenSecret,
    namespace: &'a str,
    client_id: &'a str,
    tenant: &'a str,
    service_account: String,
    cloud: &'a crate::azure::Cloud,
}

impl TokenMint<'_> {
    /// Ready with the Secret's expiry and renewal, minting only when needed.
    async fn run(&self) -> Result<Result<Outcome, Outcome>, Error> {
        let now = self.ctx.azure.tokens.now();
        let endpoint = endpoint_env(self.ctx, self.ci);
        let written = match token_output(self.ctx, self.ci, self.spec, self.client_id)
            .refresh(
                self.ctx,
                now,
                |s| tokens_expire(self.spec, s, endpoint.as_ref()),
                |issued_after| self.mint(issued_after, now),
            )
            .await?
        {
            Ok(w) => w,
            Err(failed) => return Ok(Err(failed)),
        };
        let e = written.expiry();
        let ready = self.ready(e.expires, e.renewal, now);
        Ok(Ok(written.report(ready)))
    }

    /// Tokens for every audience, through the federated ServiceAccount, none issued before
    /// `issued_after`.
    async fn mint(&self, issued_after: i64, now: i64) -> Result<Result<Minted, Outcome>, Error> {
        let credential = match federated_credential(
            &self.ctx.client,
            &self.ctx.azure.transport,
            self.namespace,
            &self.service_account,
            self.cloud,
            self.tenant,
            self.client_id,
        ) {
            Ok(c) => c,
            Err(e) => return Ok(Err(self.failed(&e))),
        };
        let mut tokens: Vec<(String, Token)> = Vec::new();
        for audience in &self.spec.audiences {
            match self
                .ctx
                .azure
                .tokens
                .get_newer_than(&credential, audience, issued_after)
                .await
            {
                Ok(t) => tokens.push((audience.clone(), t)),
                Err(e) => return Ok(Err(self.failed(&e))),
            }
        }
        let expires = tokens
            .iter()
            .map(|(_, t)| t.expires_on)
            .min()
            .unwrap_or(now);
        let obtained = tokens
            .iter()
            .map(|(_, t)| t.obtained_at)
            .max()
            .unwrap_or(now);
        let mut data = BTreeMap::new();
        let text = |v: &str| ByteString(v.as_bytes().to_vec());
        data.insert("AZURE_CLIENT_ID".to_owned(), text(self.client_id));
        data.insert(
            "DEFAULT_IDENTITY_CLIENT_ID".to_owned(),
            text(self.client_id),
        );
        data.insert("AZURE_TENANT_ID".to_owned(), text(self.tenant));
        // As on AML compute: ManagedIdentityCredential then asks the operator's endpoint.
        if let Some((url, secret)) = endpoint_env(self.ctx, self.ci) {
            data.insert("MSI_ENDPOINT".to_owned(), text(&url));
            data.insert("MSI_SECRET".to_owned(), text(&secret));
        }
        data.insert(
            "AZURE_AUTHORITY_HOST".to_owned(),
            text(&format!("{}/", self.cloud.authority_host)),
        );
        for (audience, token) in &tokens {
            let key = audience_key(audience);
            data.insert(format!("{key}.token"), text(token.secret()));
            data.insert(
                format!("{key}.expires-on"),
                text(&token.expires_on.to_string()),
            );
        }
        Ok(Ok(Minted {
            data,
            obtained,
            expires,
            what: format!(
                "tokens for identity {} ({})",
                self.client_id,
                self.spec.audiences.join(", ")
            ),
        }))
    }

    fn ready(&self, expires: i64, renewal: i64, now: i64) -> Outcome {
        let message = format!(
            "Secret {} holds tokens for {} valid until {}",
            self.spec.name,
            self.spec.audiences.join(", "),
            renewal::rfc3339(expires)
        );
        Outcome::ready(Reason::TokensIssued, message.clone())
            .condition(ConditionType::TokenIssued, true, Reason::Issued, message)
            .field("expiresAt", renewal::rfc3339(expires))
            .field("renewalTime", renewal::rfc3339(renewal))
            .failures_cleared()
            .requeue(Duration::from_secs((renewal - now).max(1) as u64))
    }

    fn failed(&self, error: &AzureError) -> Outcome {
        let previous = self.ci.status.as_ref().and_then(|s| s.failed_attempts);
        Outcome::mint_failed(
            previous,
            &format!("minting tokens for identity {}", self.client_id),
            error.reason(),
            &error.to_string(),
        )
    }
}

/// Cleanup on delete: everything the record holds (federated credentials, role assignments, the
/// identities the operator created), whatever the spec says now.
pub async fn cleanup(ci: &ComputeIdentity, ctx: &Context) -> Result<Cleanup, Error> {
    revocation::revoke_through_workspace(ctx, ci, &ci.spec.workspace_ref.name).await
}
