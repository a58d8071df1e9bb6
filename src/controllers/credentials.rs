//! Turning an `AzureCredential` / `ClusterAzureCredential` into a signed-in [`Credential`], and the
//! authorization rule for referencing one: a namespace may use its own `AzureCredential`, or a
//! `ClusterAzureCredential` whose `allowedNamespaces` admits it — checked before any token request.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Resource, ResourceExt};

use super::Context;
use crate::api::conditions::{ConditionType, Reason};
use crate::api::*;
use crate::azure::credential::ManagedIdentitySelector;
use crate::azure::scope::{Audiences, Ceiling};
use crate::azure::{Cloud, Credential};
use crate::workload_identity::ServiceAccountAssertion;

/// Why a credential could not be resolved. Messages name objects and keys, never values.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The referencing namespace may not use the credential.
    #[error("{0}")]
    Denied(String),
    /// A referenced object or key does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The referenced material is unusable (empty secret, not a certificate…).
    #[error("{0}")]
    Invalid(String),
    /// A source this version cannot use yet.
    #[error("{0}")]
    NotImplemented(String),
    /// A namespaced credential names `Custom` cloud hosts the operator was not told to call.
    #[error("{0}")]
    CustomCloudNotAllowed(String),
    /// The API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// A credential ready to request tokens, with its cloud.
pub struct Resolved {
    /// The credential.
    pub credential: Credential,
    /// Its cloud's endpoints.
    pub cloud: Cloud,
    /// How it signs in, for status messages (`service principal 2f5c…`, `workload identity sa/x`).
    pub description: String,
    /// The ARM scopes an object using it may touch (a namespaced credential: its principal's own
    /// reach; a cluster credential: `allowedScopes` for the object's namespace).
    pub ceiling: Ceiling,
    /// The token audiences an object using it may mint for pods.
    pub audiences: Audiences,
    /// Who set those limits, for messages (`ClusterAzureCredential aml-platform`).
    pub granted_by: String,
}

/// Whether `host` (or a DNS suffix) is one of `allowed` or below one of them.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allowed.iter().any(|a| {
        let a = a
            .trim_start_matches("*.")
            .trim_matches('.')
            .to_ascii_lowercase();
        !a.is_empty() && (host == a || host.ends_with(&format!(".{a}")))
    })
}

/// A namespaced credential's `Custom` endpoints are hosts the operator would call from inside the
/// cluster with secrets and tokens: only those the operator was started to allow.
fn check_custom_hosts(spec: &CredentialSpec, allowed: &[String]) -> Result<(), ResolveError> {
    let Some(e) = spec
        .endpoints
        .as_ref()
        .filter(|_| spec.cloud == Some(CloudName::Custom))
    else {
        return Ok(());
    };
    let host_of = |url: &str| {
        url.trim_start_matches("https://")
            .split(['/', ':'])
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let named = [
        ("authorityHost", Some(host_of(&e.authority_host))),
        ("resourceManager", Some(host_of(&e.resource_manager))),
        ("storageSuffix", e.storage_suffix.clone()),
        ("keyVaultSuffix", e.key_vault_suffix.clone()),
        (
            "containerRegistrySuffix",
            e.container_registry_suffix.clone(),
        ),
        // Not a host the operator calls, but one it mints tokens for.
        (
            "containerRegistryAudience",
            e.container_registry_audience.as_deref().map(host_of),
        ),
    ];
    for (field, host) in named {
        let Some(host) = host else { continue };
        if !host_allowed(&host, allowed) {
            let list = if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            };
            return Err(ResolveError::CustomCloudNotAllowed(format!(
                "spec.endpoints.{field}: {host} is not among the custom cloud hosts this operator may call for namespaced credentials (--allowed-custom-cloud-hosts: {list}); ask the platform team to allow it, or use a ClusterAzureCredential"
            )));
        }
    }
    Ok(())
}

/// The endpoints of the credential's cloud.
pub fn cloud_of(spec: &CredentialSpec) -> Cloud {
    match (spec.cloud.unwrap_or_default(), &spec.endpoints) {
        (CloudName::AzureUSGovernment, _) => Cloud::us_government(),
        (CloudName::AzureChinaCloud, _) => Cloud::china(),
        (CloudName::Custom, Some(e)) => {
            let public = Cloud::public();
            Cloud {
                authority_host: e.authority_host.trim_end_matches('/').to_owned(),
                resource_manager: e.resource_manager.trim_end_matches('/').to_owned(),
                storage_suffix: e.storage_suffix.clone().unwrap_or(public.storage_suffix),
                key_vault_suffix: e
                    .key_vault_suffix
                    .clone()
                    .unwrap_or(public.key_vault_suffix),
                container_registry_suffix: e
                    .container_registry_suffix
                    .clone()
                    .unwrap_or(public.container_registry_suffix),
                container_registry_audience: e
                    .container_registry_audience
                    .as_deref()
                    .map(|a| a.trim_end_matches('/').to_owned())
                    .unwrap_or(public.container_registry_audience),
            }
        }
        _ => Cloud::public(),
    }
}

/// Reads one key of a Secret; the value never leaves this function except into the credential.
async fn secret_value(
    ctx: &Context,
    namespace: &str,
    r: &SecretKeyRef,
) -> Result<(String, String), ResolveError> {
    let secret = ctx
        .input_secrets
        .get(&ctx.client, namespace, &r.name)
        .await?
        .ok_or_else(|| {
            ResolveError::NotFound(format!("Secret {namespace}/{} does not exist", r.name))
        })?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| {
            ResolveError::NotFound(format!(
                "Secret {namespace}/{} has no key {:?}",
                r.name, r.key
            ))
        })?;
    let value = String::from_utf8(bytes).map_err(|_| {
        ResolveError::Invalid(format!(
            "Secret {namespace}/{} key {:?} is not UTF-8 text",
            r.name, r.key
        ))
    })?;
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(ResolveError::Invalid(format!(
            "Secret {namespace}/{} key {:?} is empty",
            r.name, r.key
        )));
    }
    Ok((value, secret.resource_version().unwrap_or_default()))
}

/// Resolves a credential spec signing in to `cloud` (its own, [`cloud_of`]; or, for a service
/// principal an object names, the cloud of the credential that object acts with). `home` is where
/// its Secrets and ServiceAccounts live: the object's own namespace, or the operator's namespace
/// for a cluster-scoped credential.
pub async fn resolve_spec(
    ctx: &Context,
    spec: &CredentialSpec,
    cloud: &Cloud,
    home: &str,
    identity: &str,
) -> Result<Resolved, ResolveError> {
    let cloud = cloud.clone();
    let azure = &ctx.azure;
    let limits = |credential, description| Resolved {
        credential,
        cloud: cloud.clone(),
        description,
        ceiling: Ceiling::Unlimited,
        audiences: Audiences::default(),
        granted_by: format!("the credential of namespace {home}"),
    };
    let invalid = |e: crate::azure::AzureError| ResolveError::Invalid(e.to_string());
    if let Some(sp) = &spec.service_principal {
        let (reference, certificate) = match (&sp.client_secret_ref, &sp.client_certificate_ref) {
            (Some(r), _) => (r, false),
            (None, Some(r)) => (r, true),
            (None, None) => {
                return Err(ResolveError::Invalid(
                    "servicePrincipal has neither clientSecretRef nor clientCertificateRef".into(),
                ));
            }
        };
        let (value, version) = secret_value(ctx, home, reference).await?;
        // The Secret's resourceVersion is part of the cache key: a rotated secret gets fresh tokens.
        let key = format!("{identity}#{version}");
        let credential = if certificate {
            Credential::client_certificate(
                key,
                &cloud,
                &azure.transport,
                &spec.tenant_id,
                &sp.client_id,
                &value,
            )
        } else {
            Credential::client_secret(
                key,
                &cloud,
                &azure.transport,
                &spec.tenant_id,
                &sp.client_id,
                value,
            )
        }
        .map_err(invalid)?;
        let kind = if certificate {
            "certificate"
        } else {
            "client secret"
        };
        return Ok(limits(
            credential,
            format!(
                "service principal {} ({kind} from Secret {home}/{})",
                sp.client_id, reference.name
            ),
        ));
    }
    if let Some(wi) = &spec.workload_identity {
        let source = Arc::new(ServiceAccountAssertion::new(
            ctx.client.clone(),
            home,
            &wi.service_account_name,
        ));
        let credential = Credential::workload_identity(
            identity,
            &cloud,
            &azure.transport,
            &spec.tenant_id,
            &wi.client_id,
            source,
        )
        .map_err(invalid)?;
        return Ok(limits(
            credential,
            format!(
                "workload identity {} through ServiceAccount {home}/{}",
                wi.client_id, wi.service_account_name
            ),
        ));
    }
    if let Some(mi) = &spec.managed_identity {
        let selector = match (&mi.client_id, &mi.resource_id) {
            (Some(c), _) => ManagedIdentitySelector::ClientId(c.clone()),
            (None, Some(r)) => ManagedIdentitySelector::ResourceId(r.clone()),
            (None, None) => ManagedIdentitySelector::System,
        };
        let description = format!("the node's managed identity ({selector:?})");
        let credential = Credential::managed_identity(
            identity,
            &cloud,
            &azure.transport,
            &spec.tenant_id,
            &azure.imds_endpoint,
            selector,
        )
        .map_err(invalid)?;
        return Ok(limits(credential, description));
    }
    if spec.azure_cli.is_some() {
        let credential = Credential::azure_cli(
            identity,
            &cloud,
            &azure.transport,
            &spec.tenant_id,
            &azure.azure_cli,
        )
        .map_err(invalid)?;
        return Ok(limits(
            credential,
            format!(
                "the Azure CLI ({}) of the operator's machine",
                azure.azure_cli.display()
            ),
        ));
    }
    Err(ResolveError::Invalid("no credential source is set".into()))
}

/// What a credential is resolved for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Acting for the object: the namespace must be admitted.
    Act,
    /// Removing what the operator made for it earlier (deletes only, of recorded objects that show
    /// they are the operator's): also after the namespace was de-admitted.
    Revoke,
}

/// Resolves what a namespaced object's `credentialRef` points to, enforcing who may use it.
pub async fn resolve_ref(
    ctx: &Context,
    namespace: &str,
    reference: &CredentialRef,
) -> Result<Resolved, ResolveError> {
    resolve_ref_for(ctx, namespace, reference, Purpose::Act).await
}

/// [`resolve_ref`] for a purpose.
pub async fn resolve_ref_for(
    ctx: &Context,
    namespace: &str,
    reference: &CredentialRef,
    purpose: Purpose,
) -> Result<Resolved, ResolveError> {
    let limits = limits_for(ctx, namespace, reference, purpose).await?;
    let resolved = resolve_spec(
        ctx,
        &limits.spec,
        &cloud_of(&limits.spec),
        &limits.home,
        &limits.identity,
    )
    .await?;
    Ok(Resolved {
        ceiling: limits.ceiling,
        audiences: limits.audiences,
        granted_by: limits.granted_by,
        ..resolved
    })
}

/// What a `credentialRef` allows a namespace, read without its secret material: enough to decide
/// admission, scopes and audiences (the managed identity endpoint asks this often).
pub struct Limits {
    /// The credential's spec.
    pub spec: CredentialSpec,
    /// Where its Secrets and ServiceAccounts live.
    pub home: String,
    /// The token cache's name for it (changes with its generation).
    pub identity: String,
    /// The ARM scopes an object using it may touch.
    pub ceiling: Ceiling,
    /// The token audiences an object using it may mint for pods.
    pub audiences: Audiences,
    /// Who set those limits, for messages.
    pub granted_by: String,
}

/// The [`Limits`] of `reference` for `namespace`, enforcing who may use it.
pub async fn limits_for(
    ctx: &Context,
    namespace: &str,
    reference: &CredentialRef,
    purpose: Purpose,
) -> Result<Limits, ResolveError> {
    match reference.kind {
        CredentialKind::AzureCredential => {
            let cred = ctx
                .azure_credential(namespace, &reference.name)
                .await?
                .ok_or_else(|| {
                    ResolveError::NotFound(format!(
                        "AzureCredential {namespace}/{} does not exist",
                        reference.name
                    ))
                })?;
            ensure_valid(&cred)?;
            check_custom_hosts(&cred.spec.credential, &ctx.azure.allowed_custom_cloud_hosts)?;
            Ok(Limits {
                identity: format!(
                    "AzureCredential/{namespace}/{}@{}",
                    reference.name,
                    cred.meta().generation.unwrap_or_default()
                ),
                spec: cred.spec.credential,
                home: namespace.to_owned(),
                ceiling: Ceiling::Unlimited,
                audiences: Audiences::default(),
                granted_by: format!("the credential of namespace {namespace}"),
            })
        }
        CredentialKind::ClusterAzureCredential => {
            let cred = ctx
                .cluster_credential(&reference.name)
                .await?
                .ok_or_else(|| {
                    ResolveError::NotFound(format!(
                        "ClusterAzureCredential {} does not exist",
                        reference.name
                    ))
                })?;
            // Admission first: a namespace that is not admitted learns nothing about the credential.
            if purpose == Purpose::Act
                && !admits(ctx, &cred.spec.allowed_namespaces, namespace).await?
            {
                return Err(ResolveError::Denied(format!(
                    "ClusterAzureCredential {} does not admit namespace {namespace}: add it to spec.allowedNamespaces.names or label the namespace to match spec.allowedNamespaces.selector",
                    reference.name
                )));
            }
            ensure_valid(&cred)?;
            let ceiling = Ceiling::for_namespace(&cred.spec.allowed_scopes, namespace)
                .map_err(|e| {
                    ResolveError::Invalid(format!(
                        "ClusterAzureCredential {}: spec.allowedScopes for namespace {namespace}: {e}",
                        reference.name
                    ))
                })?;
            Ok(Limits {
                identity: format!(
                    "ClusterAzureCredential/{}@{}",
                    reference.name,
                    cred.meta().generation.unwrap_or_default()
                ),
                audiences: Audiences::new(cred.spec.allowed_audiences.as_deref()),
                granted_by: format!("ClusterAzureCredential {}", reference.name),
                home: ctx.azure.cluster_resource_namespace.clone(),
                spec: cred.spec.credential,
                ceiling,
            })
        }
    }
}

fn ensure_valid<K: Validate + Resource<DynamicType = ()>>(cred: &K) -> Result<(), ResolveError> {
    let violations = cred.validate();
    if violations.is_empty() {
        return Ok(());
    }
    Err(ResolveError::Invalid(format!(
        "{} {} is invalid: {}",
        K::kind(&()),
        cred.name_any(),
        violations[0]
    )))
}

/// Whether `allowed` admits `namespace` (by name, or by its labels).
pub async fn admits(
    ctx: &Context,
    allowed: &AllowedNamespaces,
    namespace: &str,
) -> Result<bool, kube::Error> {
    if allowed.names.iter().any(|n| n == namespace) {
        return Ok(true);
    }
    let Some(selector) = &allowed.selector else {
        return Ok(false);
    };
    let labels = ctx.namespace_labels(namespace).await?;
    Ok(selector_matches(selector, &labels))
}

/// Kubernetes label-selector semantics: every `matchLabels` pair and every expression must hold; an
/// empty selector matches everything.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    pairs && expressions
}

/// The behaviour of both credential kinds: resolve the source, prove it with a Resource Manager
/// token (from the shared cache), and report who signed in. Looks again when the token goes stale.
pub async fn prove(
    ctx: &Context,
    spec: &CredentialSpec,
    home: &str,
    identity: &str,
    namespaced: bool,
) -> Result<super::Outcome, super::Error> {
    use super::Outcome;
    use std::time::Duration;
    const RESOLVED: ConditionType = ConditionType::CredentialResolved;
    let resolving = async {
        if namespaced {
            check_custom_hosts(spec, &ctx.azure.allowed_custom_cloud_hosts)?;
        }
        resolve_spec(ctx, spec, &cloud_of(spec), home, identity).await
    };
    let resolved = match resolving.await {
        Ok(r) => r,
        Err(ResolveError::Kube(e)) => return Err(e.into()),
        Err(e) => {
            let message = e.to_string();
            return Ok(Outcome::not_ready(e.reason(), message.clone())
                .condition(RESOLVED, false, e.reason(), message)
                .requeue(Duration::from_secs(300)));
        }
    };
    let description = resolved.description.clone();
    match ctx
        .azure
        .tokens
        // A proof needs a token the credential can get now, never a cached stand-in.
        .get_newer_than(
            &resolved.credential,
            &resolved.cloud.resource_manager,
            i64::MIN,
        )
        .await
    {
        Ok(token) => {
            let oid = token.claims.oid.clone().unwrap_or_default();
            let appid = token.claims.appid.clone().unwrap_or_default();
            let stale_in = token.stale_at() - jiff::Timestamp::now().as_second();
            Ok(Outcome::ready(
                Reason::Authenticated,
                format!(
                    "signed in to tenant {} with {description}: client id {appid}, object id {oid}",
                    spec.tenant_id
                ),
            )
            .condition(RESOLVED, true, Reason::Resolved, description)
            .field("objectId", oid)
            .field("appId", appid)
            .requeue(Duration::from_secs(stale_in.max(60) as u64)))
        }
        Err(e) => {
            let retry = if e.is_transient() { 30 } else { 300 };
            Ok(
                Outcome::not_ready(e.reason(), format!("{description}: {e}"))
                    .condition(RESOLVED, true, Reason::Resolved, description)
                    .field("objectId", serde_json::Value::Null)
                    .field("appId", serde_json::Value::Null)
                    .requeue(Duration::from_secs(retry)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn custom_cloud_hosts_match_whole_labels() {
        let allowed = vec!["azurestack.example".to_string(), "*.contoso.example".into()];
        assert!(host_allowed("login.azurestack.example", &allowed));
        assert!(host_allowed("azurestack.example", &allowed));
        assert!(host_allowed("Management.Contoso.Example", &allowed));
        assert!(!host_allowed("evilazurestack.example", &allowed));
        assert!(!host_allowed("azurestack.example.evil", &allowed));
        assert!(!host_allowed("anything", &[]));
        let spec: CredentialSpec = serde_json::from_value(serde_json::json!({
            "tenantId": "00000000-0000-0000-0000-000000000001", "cloud": "Custom",
            "endpoints": {"authorityHost": "https://login.azurestack.example", "resourceManager": "https://arm.attacker.example"},
            "servicePrincipal": {"clientId": "00000000-0000-0000-0000-000000000002", "clientSecretRef": {"name": "s", "key": "k"}},
        }))
        .unwrap();
        let refused = check_custom_hosts(&spec, &allowed).unwrap_err().to_string();
        assert!(
            refused.starts_with("spec.endpoints.resourceManager: arm.attacker.example"),
            "{refused}"
        );
        assert!(check_custom_hosts(&spec, &["example".into()]).is_ok());
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let labels: BTreeMap<String, String> = [("team".to_string(), "a".to_string())].into();
        let empty = LabelSelector::default();
        assert!(
            selector_matches(&empty, &labels),
            "an empty selector matches everything"
        );
        let by_label = LabelSelector {
            match_labels: Some([("team".to_string(), "a".to_string())].into()),
            ..Default::default()
        };
        assert!(selector_matches(&by_label, &labels));
        assert!(!selector_matches(&by_label, &BTreeMap::new()));
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "team".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..Default::default()
        };
        assert!(selector_matches(&expr("In", &["a", "b"]), &labels));
        assert!(!selector_matches(&expr("NotIn", &["a"]), &labels));
        assert!(selector_matches(&expr("Exists", &[]), &labels));
        assert!(!selector_matches(&expr("DoesNotExist", &[]), &labels));
        assert!(!selector_matches(&expr("Bogus", &[]), &labels));
    }
}
