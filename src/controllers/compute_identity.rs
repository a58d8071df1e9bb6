//! The `ComputeIdentity` behaviour: the compute's identity in Azure (created when missing, patched
//! onto the compute when managed), its grants, federated credentials for the listed ServiceAccounts
//! with this cluster's issuer, and the token Secret pods mount — renewed from the tokens' real
//! expiry, never re-minted while still valid (a restart reads the Secret back), one Entra request per
//! identity and audience however many objects share them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::workspace::{self, arm_for, azure_failure, ensure_role};
use super::{Context, Error, Outcome};
use crate::api::*;
use crate::azure::models::ml_api_versions::MACHINE_LEARNING;
use crate::azure::models::{self, api_versions};
use crate::azure::{AzureError, Credential, Token};
use crate::outputs::{self};
use crate::renewal::{self, Policy};
use crate::workload_identity::{ServiceAccountAssertion, TOKEN_EXCHANGE_AUDIENCE};

const ACR_PULL: &str = "7f951dda-4ed3-4680-a7ca-43fe172d538d";
const STORAGE_BLOB_DATA_READER: &str = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";
const KEY_VAULT_SECRETS_USER: &str = "4633458b-17de-408a-b874-0445c86b69e6";

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

/// A federated identity credential name for one ServiceAccount (3-120 of `[A-Za-z0-9-_]`).
pub fn federation_name(namespace: &str, service_account: &str) -> String {
    let name: String = format!("aml-{namespace}-{service_account}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.chars().take(120).collect()
}

/// The behaviour.
pub async fn reconcile(ci: &ComputeIdentity, ctx: &Context) -> Result<Outcome, Error> {
    let spec = &ci.spec;
    let namespace = ci.namespace().unwrap_or_default();
    let (ws, arm, cloud, _) =
        match workspace::referenced(ctx, &namespace, &spec.workspace_ref.name).await? {
            Ok(found) => found,
            Err(outcome) => return Ok(outcome),
        };
    let mut created = ci
        .status
        .as_ref()
        .map(|s| s.created_identities.clone())
        .unwrap_or_default();
    let user = spec.identity.type_ == ComputeIdentityType::UserAssigned;

    // 1. The identity: user-assigned identities exist (or are created), the compute carries them.
    let mut default_identity: Option<models::UserAssignedIdentity> = None;
    if user {
        for id in &spec.identity.user_assigned_identities {
            let found = match arm
                .get::<models::UserAssignedIdentity>(id, api_versions::MANAGED_IDENTITY)
                .await
            {
                Ok(f) => f,
                Err(e) => return Ok(azure_failure(&e, &format!("reading identity {id}"))),
            };
            let identity = match (found, &spec.create_if_missing) {
                (Some(i), _) => i,
                (None, Some(create)) => {
                    let body = models::UserAssignedIdentity {
                        location: create.location.clone(),
                        ..Default::default()
                    };
                    match arm
                        .put::<_, models::UserAssignedIdentity>(
                            id,
                            api_versions::MANAGED_IDENTITY,
                            &body,
                        )
                        .await
                    {
                        Ok(r) => {
                            if !created.iter().any(|c| c.eq_ignore_ascii_case(id)) {
                                created.push(id.clone());
                            }
                            r.body.unwrap_or(body)
                        }
                        Err(e) => return Ok(azure_failure(&e, &format!("creating identity {id}"))),
                    }
                }
                (None, None) => {
                    return Ok(Outcome::not_ready("IdentityNotFound", format!("user-assigned identity {id} does not exist: create it, or set spec.createIfMissing")).requeue(Duration::from_secs(300)));
                }
            };
            default_identity.get_or_insert(identity);
        }
    }
    let compute_path = format!(
        "{}/computes/{}",
        workspace::path(&ws.spec),
        spec.compute_name
    );
    let mut system_principal = None;
    if spec.manage_compute || !user {
        let compute = match arm
            .get::<models::Compute>(&compute_path, MACHINE_LEARNING)
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Ok(Outcome::not_ready(
                    "ComputeNotFound",
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
            "IdentityPending",
            "the compute reports no principal for its identity yet",
        )
        .requeue(Duration::from_secs(30)));
    };

    // 2. Grants.
    let mut grants: Vec<(String, &str)> = Vec::new();
    if let Some(g) = &spec.grants {
        if g.acr_pull {
            match ws.spec.associated_resources.as_ref().and_then(|r| r.container_registry.clone()) {
                Some(registry) => grants.push((registry, ACR_PULL)),
                None => return Ok(Outcome::not_ready("RegistryUnknown", "grants.acrPull needs the Workspace's spec.associatedResources.containerRegistry").requeue(Duration::from_secs(300))),
            }
        }
        grants.extend(
            g.storage_blob_data_reader
                .iter()
                .map(|s| (s.clone(), STORAGE_BLOB_DATA_READER)),
        );
        grants.extend(
            g.key_vault_secrets_user
                .iter()
                .map(|s| (s.clone(), KEY_VAULT_SECRETS_USER)),
        );
    }
    for (scope, role) in &grants {
        if let Err(e) = ensure_role(&arm, scope, role, &principal).await {
            return Ok(
                azure_failure(&e, "granting the compute identity its roles").condition(
                    "PermissionsVerified",
                    false,
                    e.reason(),
                    e.to_string(),
                ),
            );
        }
    }
    let permissions = (
        "PermissionsVerified",
        true,
        "RolesGranted",
        format!(
            "{} role assignments for principal {principal}",
            grants.len()
        ),
    );

    // 3. Federation and the token Secret (user-assigned only).
    let mut outcome_fields = serde_json::Map::new();
    outcome_fields.insert("clientId".into(), json!(client_id));
    outcome_fields.insert("principalId".into(), json!(principal_id));
    outcome_fields.insert("createdIdentities".into(), json!(created));
    if !user {
        let mut outcome = Outcome::ready("SystemAssignedReported", format!("compute {} uses its system-assigned identity (principal {principal})", spec.compute_name))
            .condition("CredentialResolved", true, "Resolved", "signed in")
            .condition(permissions.0, permissions.1, permissions.2, permissions.3)
            .condition(
                "TokenIssued",
                false,
                "SystemAssignedIdentity",
                "a system-assigned identity can be used only from inside its compute; use a UserAssigned identity with federation for a token Secret",
            );
        outcome.fields = outcome_fields;
        return Ok(outcome.requeue(Duration::from_secs(600)));
    }
    let identity = default_identity.expect("user-assigned identities were read above");
    let identity_id = spec.identity.user_assigned_identities[0].clone();
    let client_id = client_id.unwrap_or_default();
    let issuer = ctx.issuer().await?;
    let accounts = spec
        .federation
        .as_ref()
        .map(|f| f.service_accounts.clone())
        .unwrap_or_default();
    for account in &accounts {
        let fic = models::FederatedIdentityCredential {
            properties: models::FederatedIdentityCredentialProperties {
                issuer: issuer.clone(),
                subject: format!("system:serviceaccount:{namespace}:{account}"),
                audiences: vec![TOKEN_EXCHANGE_AUDIENCE.into()],
            },
            ..Default::default()
        };
        let path = format!(
            "{identity_id}/federatedIdentityCredentials/{}",
            federation_name(&namespace, account)
        );
        let current = match arm
            .get::<models::FederatedIdentityCredential>(&path, api_versions::MANAGED_IDENTITY)
            .await
        {
            Ok(c) => c,
            Err(e) => return Ok(azure_failure(&e, "reading federated identity credentials")),
        };
        if current
            .as_ref()
            .is_none_or(|c| c.properties != fic.properties)
            && let Err(e) = arm
                .put::<_, models::FederatedIdentityCredential>(
                    &path,
                    api_versions::MANAGED_IDENTITY,
                    &fic,
                )
                .await
        {
            return Ok(
                azure_failure(&e, "writing a federated identity credential").condition(
                    "FederationValid",
                    false,
                    e.reason(),
                    e.to_string(),
                ),
            );
        }
    }
    let federation = (
        "FederationValid",
        true,
        "Federated",
        format!(
            "{} ServiceAccount(s) trusted with issuer {issuer}",
            accounts.len()
        ),
    );
    let base = |ready: Outcome| {
        let mut o = ready
            .condition("CredentialResolved", true, "Resolved", "signed in")
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
        o
    };
    let Some(token_secret) = &spec.token_secret else {
        return Ok(base(
            Outcome::ready("IdentityReady", format!("identity {client_id} is ready")).condition(
                "TokenIssued",
                true,
                "NotRequested",
                "no tokenSecret",
            ),
        )
        .requeue(Duration::from_secs(600)));
    };
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
        cloud: &cloud,
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
    fn policy(&self) -> Policy {
        Policy {
            renew_before: self
                .spec
                .renew_before
                .as_deref()
                .and_then(crate::api::validation::parse_duration)
                .map(|s| s as i64),
            renew_before_percentage: self.spec.renew_before_percentage,
        }
    }

    fn spec_hash(&self) -> String {
        outputs::fingerprint(&format!(
            "{}|{}|{:?}|{:?}",
            self.client_id,
            self.spec.audiences.join(","),
            self.spec.renew_before,
            self.spec.renew_before_percentage
        ))
    }

    /// Ready with the Secret's expiry and renewal, minting only when needed.
    async fn run(&self) -> Result<Result<Outcome, Outcome>, Error> {
        let now = self.ctx.azure.tokens.now();
        let force = outputs::force_refresh(self.ci);
        let secrets = Api::<Secret>::namespaced(self.ctx.client.clone(), self.namespace);
        let existing = secrets.get_opt(&self.spec.name).await?;
        if let Some(still) =
            outputs::Expiry::reusable(existing.as_ref(), self.ci, &self.spec_hash(), &force, now)
        {
            // Still valid: nothing to mint (this is what keeps a restart from re-minting).
            return Ok(Ok(self.ready(still.expires, still.renewal, now)));
        }
        let issued_after = existing
            .as_ref()
            .and_then(outputs::Expiry::read)
            .map_or(i64::MIN, |e| e.issued);

        let source = Arc::new(ServiceAccountAssertion::new(
            self.ctx.client.clone(),
            self.namespace,
            &self.service_account,
        ));
        let cloud = self.cloud;
        // Keyed by the federated ServiceAccount and identity: every object using them shares tokens.
        let key = format!("federated/{}/{}", self.namespace, self.service_account);
        let credential = match Credential::workload_identity(
            key,
            cloud,
            &self.ctx.azure.transport,
            self.tenant,
            self.client_id,
            source,
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
        let renewal = renewal::renewal_time(
            obtained,
            expires,
            self.policy(),
            self.ci.meta().uid.as_deref().unwrap_or_default(),
        );

        let mut data = BTreeMap::new();
        let text = |v: &str| ByteString(v.as_bytes().to_vec());
        data.insert("AZURE_CLIENT_ID".to_owned(), text(self.client_id));
        data.insert(
            "DEFAULT_IDENTITY_CLIENT_ID".to_owned(),
            text(self.client_id),
        );
        data.insert("AZURE_TENANT_ID".to_owned(), text(self.tenant));
        data.insert(
            "AZURE_AUTHORITY_HOST".to_owned(),
            text(&format!("{}/", cloud.authority_host)),
        );
        for (audience, token) in &tokens {
            let key = audience_key(audience);
            data.insert(format!("{key}.token"), text(token.secret()));
            data.insert(
                format!("{key}.expires-on"),
                text(&token.expires_on.to_string()),
            );
        }
        let expiry = outputs::Expiry {
            expires,
            renewal,
            issued: obtained,
            fingerprint: self.spec_hash(),
            force,
        };
        if let Err(conflict) = outputs::apply_expiring(
            &self.ctx.client,
            self.ci,
            &self.spec.name,
            "Opaque",
            data,
            &expiry,
        )
        .await?
        {
            return Ok(Err(Outcome::not_ready("TargetConflict", conflict.clone())
                .condition("TokenIssued", false, "TargetConflict", conflict)));
        }
        let audiences = self.spec.audiences.join(", ");
        let note = format!(
            "tokens for identity {} ({audiences}) written to Secret {}, valid until {}",
            self.client_id,
            self.spec.name,
            renewal::rfc3339(expires)
        );
        Ok(Ok(self
            .ready(expires, renewal, now)
            .event("TokenIssued", note)))
    }

    fn ready(&self, expires: i64, renewal: i64, now: i64) -> Outcome {
        let message = format!(
            "Secret {} holds tokens for {} valid until {}",
            self.spec.name,
            self.spec.audiences.join(", "),
            renewal::rfc3339(expires)
        );
        Outcome::ready("TokensIssued", message.clone())
            .condition("TokenIssued", true, "Issued", message)
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

/// Cleanup on delete: the federated credentials and role assignments this object made, and the
/// identities it created. Azure scopes already gone count as cleaned.
pub async fn cleanup(ci: &ComputeIdentity, ctx: &Context) -> Result<(), Error> {
    let spec = &ci.spec;
    let namespace = ci.namespace().unwrap_or_default();
    let Some(ws) = Api::<Workspace>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&spec.workspace_ref.name)
        .await?
    else {
        tracing::warn!(compute_identity = %ci.name_any(), "the Workspace is gone; nothing can be cleaned up in Azure");
        return Ok(());
    };
    let arm = match arm_for(ctx, &namespace, &ws.spec.credential_ref).await? {
        Ok((arm, _, _)) => arm,
        Err(_) => {
            tracing::warn!(compute_identity = %ci.name_any(), "no usable credential; releasing without cleaning up in Azure");
            return Ok(());
        }
    };
    let transient = |e: AzureError| {
        if e.is_transient() {
            Err(Error::Azure(e.to_string()))
        } else {
            Ok(())
        }
    };
    if spec.identity.type_ == ComputeIdentityType::UserAssigned {
        let id = &spec.identity.user_assigned_identities[0];
        for account in spec.federation.iter().flat_map(|f| &f.service_accounts) {
            let path = format!(
                "{id}/federatedIdentityCredentials/{}",
                federation_name(&namespace, account)
            );
            if let Err(e) = arm.delete(&path, api_versions::MANAGED_IDENTITY).await {
                transient(e)?;
            }
        }
        if let Ok(Some(identity)) = arm
            .get::<models::UserAssignedIdentity>(id, api_versions::MANAGED_IDENTITY)
            .await
            && let Some(principal) = identity.properties.and_then(|p| p.principal_id)
        {
            let mut scopes: Vec<(String, &str)> = Vec::new();
            if let Some(g) = &spec.grants {
                if g.acr_pull
                    && let Some(registry) = ws
                        .spec
                        .associated_resources
                        .as_ref()
                        .and_then(|r| r.container_registry.clone())
                {
                    scopes.push((registry, ACR_PULL));
                }
                scopes.extend(
                    g.storage_blob_data_reader
                        .iter()
                        .map(|s| (s.clone(), STORAGE_BLOB_DATA_READER)),
                );
                scopes.extend(
                    g.key_vault_secrets_user
                        .iter()
                        .map(|s| (s.clone(), KEY_VAULT_SECRETS_USER)),
                );
            }
            for (scope, role) in scopes {
                let path = format!(
                    "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
                    workspace::assignment_name(&scope, role, &principal)
                );
                if let Err(e) = arm.delete(&path, api_versions::AUTHORIZATION).await {
                    transient(e)?;
                }
            }
        }
    }
    for created in ci.status.iter().flat_map(|s| &s.created_identities) {
        if let Err(e) = arm.delete(created, api_versions::MANAGED_IDENTITY).await {
            transient(e)?;
        }
    }
    Ok(())
}
