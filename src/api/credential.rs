//! `AzureCredential` and `ClusterAzureCredential`: how the operator itself signs in to Azure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::*;
use super::rules::{CelRule, cel_rules};
use super::validation::{Validate, Violation, Violations, shown};

/// The national cloud the credential signs in to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum CloudName {
    /// Azure public cloud (`login.microsoftonline.com`, `management.azure.com`).
    #[default]
    AzurePublicCloud,
    /// Azure US Government (`login.microsoftonline.us`, `management.usgovcloudapi.net`).
    AzureUSGovernment,
    /// Azure operated by 21Vianet (`login.chinacloudapi.cn`, `management.chinacloudapi.cn`).
    AzureChinaCloud,
    /// Explicit endpoints from `spec.endpoints` (Azure Stack, sovereign clouds, test emulators).
    Custom,
}

/// Endpoints of a `Custom` cloud.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudEndpoints {
    /// Entra ID authority host, e.g. `https://login.microsoftonline.com`.
    #[schemars(regex(pattern = HTTPS_ENDPOINT_PATTERN))]
    pub authority_host: String,
    /// Azure Resource Manager endpoint, e.g. `https://management.azure.com`.
    #[schemars(regex(pattern = HTTPS_ENDPOINT_PATTERN))]
    pub resource_manager: String,
    /// Storage DNS suffix, e.g. `core.windows.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUFFIX_PATTERN))]
    pub storage_suffix: Option<String>,
    /// Key Vault DNS suffix, e.g. `vault.azure.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUFFIX_PATTERN))]
    pub key_vault_suffix: Option<String>,
    /// Container registry DNS suffix, e.g. `azurecr.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUFFIX_PATTERN))]
    pub container_registry_suffix: Option<String>,
    /// The Entra ID resource whose tokens the registries exchange for ACR refresh tokens
    /// (default `https://containerregistry.azure.net`, the same in every Azure cloud).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = HTTPS_ENDPOINT_PATTERN))]
    pub container_registry_audience: Option<String>,
}

/// An Entra ID application (service principal) with a client secret or a certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = service_principal_rules)]
pub struct ServicePrincipalSource {
    /// Application (client) id of the service principal.
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub client_id: String,
    /// Secret key holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding a PEM certificate and its private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_ref: Option<SecretKeyRef>,
}

/// Workload identity: a ServiceAccount of this credential's namespace, federated with the client id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadIdentitySource {
    /// Client id of the user-assigned identity or application that trusts the ServiceAccount.
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub client_id: String,
    /// ServiceAccount in the credential's own namespace whose token is exchanged (audience
    /// `api://AzureADTokenExchange`). Another namespace's ServiceAccount cannot be named.
    #[schemars(regex(pattern = K8S_NAME_PATTERN))]
    pub service_account_name: String,
}

/// The node's managed identity through IMDS (cluster-scoped credentials only).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = managed_identity_rules)]
pub struct ManagedIdentitySource {
    /// Client id of a user-assigned identity on the node; omit for the system-assigned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub client_id: Option<String>,
    /// Resource id of a user-assigned identity on the node (instead of `clientId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = USER_ASSIGNED_IDENTITY_PATTERN))]
    pub resource_id: Option<String>,
}

/// The signed-in Azure CLI of the machine running the operator (cluster-scoped credentials only).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct AzureCliSource {}

/// Fields shared by `AzureCredential` and `ClusterAzureCredential`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = credential_rules)]
pub struct CredentialSpec {
    /// Entra ID tenant (directory) id.
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub tenant_id: String,
    /// Cloud to sign in to. `Custom` requires `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudName>,
    /// Endpoints of a `Custom` cloud; only with `cloud: Custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<CloudEndpoints>,
    /// Sign in as a service principal with a client secret or certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_principal: Option<ServicePrincipalSource>,
    /// Sign in through workload identity federation with a ServiceAccount of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<WorkloadIdentitySource>,
    /// Sign in with the node's managed identity (ClusterAzureCredential only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_identity: Option<ManagedIdentitySource>,
    /// Sign in with the Azure CLI of the operator's machine (ClusterAzureCredential only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_cli: Option<AzureCliSource>,
}

/// How the operator authenticates to Azure for objects in this namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "amlidentity.io",
    version = "v1alpha1",
    kind = "AzureCredential",
    doc = "How the operator signs in to Azure for objects in this namespace: a service principal or workload identity.",
    namespaced,
    status = "CredentialStatus",
    shortname = "azcred",
    category = "aml",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".spec.tenantId","priority":1}"#,
    printcolumn = r#"{"name":"Principal","type":"string","jsonPath":".status.objectId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = namespaced_credential_rules)]
pub struct AzureCredentialSpec {
    /// Tenant, cloud and exactly one credential source.
    #[serde(flatten)]
    pub credential: CredentialSpec,
}

/// Which namespaces may reference a `ClusterAzureCredential`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespaces admitted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        extend("x-kubernetes-list-type" = "set"),
        inner(regex(pattern = NAMESPACE_PATTERN))
    )]
    pub names: Vec<String>,
    /// Namespaces admitted by their labels. An empty selector (`{}`) admits every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "namespace_selector_schema")]
    pub selector: Option<LabelSelector>,
}

/// Label-selector operators, as Kubernetes defines them.
pub const SELECTOR_OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// `In`/`NotIn` need values, `Exists`/`DoesNotExist` take none.
pub const RULE_SELECTOR_VALUES: CelRule = CelRule {
    rule: "(self.operator == 'In' || self.operator == 'NotIn') == (has(self.values) && size(self.values) > 0)",
    message: "a matchExpressions entry with operator In or NotIn lists values; Exists and DoesNotExist list none",
};

/// A label selector as Kubernetes validates one: known operators, label keys and values, bounded.
fn namespace_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let value = |description: &str| {
        serde_json::json!({
            "type": "string", "pattern": LABEL_VALUE_PATTERN, "maxLength": 63,
            "description": description,
        })
    };
    let mut schema = schemars::json_schema!({
        "type": "object",
        "description": "Namespaces admitted by their labels. An empty selector ({}) admits every namespace.",
        "properties": {
            "matchLabels": {
                "type": "object",
                "description": "Labels a namespace must carry, every one of them.",
                "maxProperties": 32,
                "additionalProperties": value("The value the label must have."),
            },
            "matchExpressions": {
                "type": "array",
                "description": "Requirements a namespace's labels must meet, every one of them.",
                "maxItems": 16,
                "items": {
                    "type": "object",
                    "description": "One requirement: a label key, an operator and, for In and NotIn, values.",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {
                            "type": "string", "pattern": LABEL_KEY_PATTERN, "maxLength": 317,
                            "description": "The label key the requirement is about.",
                        },
                        "operator": {
                            "type": "string", "enum": SELECTOR_OPERATORS,
                            "description": "In, NotIn, Exists or DoesNotExist.",
                        },
                        "values": {
                            "type": "array", "maxItems": 64,
                            "description": "Label values for In and NotIn; empty for Exists and DoesNotExist.",
                            "items": value("One label value."),
                        },
                    },
                },
            },
        },
        "x-kubernetes-map-type": "atomic",
    });
    let items = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("matchExpressions"))
        .and_then(|m| m.get_mut("items"))
        .and_then(|i| i.as_object_mut())
        .expect("the schema above has items");
    items.insert(
        "x-kubernetes-validations".into(),
        serde_json::json!([{"rule": RULE_SELECTOR_VALUES.rule, "message": RULE_SELECTOR_VALUES.message}]),
    );
    schema
}

/// Checks a label selector as the API server checks one.
fn validate_selector(v: &mut Violations, selector: &LabelSelector, field: &str) {
    let labels = selector.match_labels.as_ref();
    v.at_most(
        labels.map_or(0, |l| l.len()),
        32,
        format!("{field}.matchLabels"),
    );
    for (key, value) in labels.into_iter().flatten() {
        v.pattern(
            key,
            LABEL_KEY_PATTERN,
            format!("{field}.matchLabels"),
            "a label key",
        );
        v.pattern(
            value,
            LABEL_VALUE_PATTERN,
            format!("{field}.matchLabels[{}]", shown(key)),
            "a label value",
        );
    }
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    v.at_most(expressions.len(), 16, format!("{field}.matchExpressions"));
    for (i, e) in expressions.iter().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        v.pattern(
            &e.key,
            LABEL_KEY_PATTERN,
            format!("{at}.key"),
            "a label key",
        );
        if !SELECTOR_OPERATORS.contains(&e.operator.as_str()) {
            v.push(
                format!("{at}.operator"),
                format!(
                    "{} is not a selector operator: use In, NotIn, Exists or DoesNotExist",
                    shown(&e.operator)
                ),
            );
            continue;
        }
        let values = e.values.as_deref().unwrap_or_default();
        let listed = matches!(e.operator.as_str(), "In" | "NotIn");
        v.check(
            listed != values.is_empty(),
            format!("{at}.values"),
            RULE_SELECTOR_VALUES.message,
        );
        v.at_most(values.len(), 64, format!("{at}.values"));
        for (j, value) in values.iter().enumerate() {
            v.pattern(
                value,
                LABEL_VALUE_PATTERN,
                format!("{at}.values[{j}]"),
                "a label value",
            );
        }
    }
}

/// A credential shared by several namespaces; only those admitted by `allowedNamespaces` may use it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "amlidentity.io",
    version = "v1alpha1",
    kind = "ClusterAzureCredential",
    doc = "A credential shared by the namespaces its allowedNamespaces admits; may also use a node managed identity or the Azure CLI.",
    status = "CredentialStatus",
    shortname = "cazcred",
    category = "aml",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".spec.tenantId","priority":1}"#,
    printcolumn = r#"{"name":"Principal","type":"string","jsonPath":".status.objectId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cluster_credential_rules)]
pub struct ClusterAzureCredentialSpec {
    /// Tenant, cloud and exactly one credential source.
    #[serde(flatten)]
    pub credential: CredentialSpec,
    /// Namespaces whose objects may reference this credential. Required: with no names and no
    /// selector no namespace is admitted. Admitting a namespace lets anyone who can create objects
    /// there have the operator act, with this credential's principal, on whatever `allowedScopes`
    /// admits for that namespace, and mint tokens of its own identities for `allowedAudiences`.
    pub allowed_namespaces: AllowedNamespaces,
    /// The ARM scopes objects using this credential may read or write, at least one: a
    /// subscription (`/subscriptions/<id>`), a resource group (`…/resourceGroups/<name>`) or a
    /// resource id. `{namespace}` stands for the referencing object's namespace, e.g.
    /// `/subscriptions/<id>/resourceGroups/rg-aml-{namespace}`. Every id the operator touches for an
    /// object (workspace, its identities and associated resources, compute identities and grant
    /// scopes, datastores, registries) must equal or lie below one of them, compared segment by
    /// segment (`rg-a` does not admit `rg-ab`); otherwise the object is `OutOfScope` and nothing is
    /// called in Azure for it. The principal's own Azure role assignments still apply on top.
    #[schemars(
        length(min = 1, max = 64),
        extend("x-kubernetes-list-type" = "set"),
        inner(regex(pattern = SCOPE_PATTERN))
    )]
    pub allowed_scopes: Vec<String>,
    /// Token audiences objects using this credential may mint for pods (ComputeIdentity
    /// `tokenSecret.audiences`, Datastore identity access), written as resources without
    /// `/.default`, e.g. `https://storage.azure.com`. Unset: any audience; `[]`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        extend("x-kubernetes-list-type" = "set"),
        inner(regex(pattern = AUDIENCE_PATTERN))
    )]
    pub allowed_audiences: Option<Vec<String>>,
}

/// Observed state of a credential.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialStatus {
    /// Conditions and observed generation.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// `oid` claim of the last resource-manager token: the object id of the signed-in principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// `appid` claim of the last resource-manager token: the client id that signed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Secrets of this namespace the operator keeps from vanishing during a namespace deletion
    /// (a finalizer), so that dependents can still remove what they made in Azure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guarded_secrets: Vec<String>,
}
impl_has_common_status!(CredentialStatus);

/// Exactly one credential source.
pub const RULE_ONE_SOURCE: CelRule = CelRule {
    rule: "(has(self.servicePrincipal) ? 1 : 0) + (has(self.workloadIdentity) ? 1 : 0) + (has(self.managedIdentity) ? 1 : 0) + (has(self.azureCli) ? 1 : 0) == 1",
    message: "set exactly one credential source: servicePrincipal, workloadIdentity, managedIdentity or azureCli",
};
/// `endpoints` exactly when `cloud: Custom`.
pub const RULE_CUSTOM_ENDPOINTS: CelRule = CelRule {
    rule: "(has(self.cloud) && self.cloud == 'Custom') == has(self.endpoints)",
    message: "endpoints is required with cloud: Custom and not allowed with a named cloud",
};
/// A service principal has a secret or a certificate, not both.
pub const RULE_SP_ONE_SECRET: CelRule = CelRule {
    rule: "has(self.clientSecretRef) != has(self.clientCertificateRef)",
    message: "servicePrincipal needs exactly one of clientSecretRef or clientCertificateRef",
};
/// A managed identity is selected by client id or resource id, not both.
pub const RULE_MI_ONE_SELECTOR: CelRule = CelRule {
    rule: "!(has(self.clientId) && has(self.resourceId))",
    message: "managedIdentity takes clientId or resourceId, not both",
};
/// Node identities and the CLI are for cluster admins only.
pub const RULE_NAMESPACED_SOURCES: CelRule = CelRule {
    rule: "!has(self.managedIdentity) && !has(self.azureCli)",
    message: "managedIdentity and azureCli are only allowed in a ClusterAzureCredential: a node identity is shared by every namespace; use servicePrincipal or workloadIdentity here",
};

/// Allowed audiences are written as resources, the form every SDK request is compared in.
pub const RULE_AUDIENCES_AS_RESOURCES: CelRule = CelRule {
    rule: "!has(self.allowedAudiences) || self.allowedAudiences.all(a, !a.endsWith('/') && !a.endsWith('/.default'))",
    message: "allowedAudiences lists resources without a trailing / or /.default, e.g. https://storage.azure.com",
};

cel_rules!(credential_rules, &[RULE_ONE_SOURCE, RULE_CUSTOM_ENDPOINTS]);
cel_rules!(cluster_credential_rules, &[RULE_AUDIENCES_AS_RESOURCES]);
cel_rules!(service_principal_rules, &[RULE_SP_ONE_SECRET]);
cel_rules!(managed_identity_rules, &[RULE_MI_ONE_SELECTOR]);
cel_rules!(namespaced_credential_rules, &[RULE_NAMESPACED_SOURCES]);

impl CredentialSpec {
    fn validate_into(&self, v: &mut Violations) {
        v.pattern(
            &self.tenant_id,
            GUID_PATTERN,
            "spec.tenantId",
            "a tenant id GUID",
        );
        let sources = [
            self.service_principal.is_some(),
            self.workload_identity.is_some(),
            self.managed_identity.is_some(),
            self.azure_cli.is_some(),
        ];
        let count = sources.iter().filter(|s| **s).count();
        v.check(
            count == 1,
            "spec",
            format!(
                "{count} credential sources are set; {}",
                RULE_ONE_SOURCE.message
            ),
        );
        let custom = self.cloud == Some(CloudName::Custom);
        v.check(
            custom == self.endpoints.is_some(),
            "spec.endpoints",
            RULE_CUSTOM_ENDPOINTS.message,
        );
        if let Some(e) = &self.endpoints {
            for (field, value) in [
                ("authorityHost", &e.authority_host),
                ("resourceManager", &e.resource_manager),
            ] {
                v.pattern(
                    value,
                    HTTPS_ENDPOINT_PATTERN,
                    format!("spec.endpoints.{field}"),
                    "an https:// URL with no path",
                );
            }
            v.pattern_opt(
                e.container_registry_audience.as_deref(),
                HTTPS_ENDPOINT_PATTERN,
                "spec.endpoints.containerRegistryAudience",
                "an https:// resource with no path, such as https://containerregistry.azure.net",
            );
            for (field, value) in [
                ("storageSuffix", &e.storage_suffix),
                ("keyVaultSuffix", &e.key_vault_suffix),
                ("containerRegistrySuffix", &e.container_registry_suffix),
            ] {
                v.pattern_opt(
                    value.as_deref(),
                    DNS_SUFFIX_PATTERN,
                    format!("spec.endpoints.{field}"),
                    "a DNS suffix such as core.windows.net",
                );
            }
        }
        if let Some(sp) = &self.service_principal {
            v.pattern(
                &sp.client_id,
                GUID_PATTERN,
                "spec.servicePrincipal.clientId",
                "a client id GUID",
            );
            v.check(
                sp.client_secret_ref.is_some() != sp.client_certificate_ref.is_some(),
                "spec.servicePrincipal",
                RULE_SP_ONE_SECRET.message,
            );
            for (field, r) in [
                ("clientSecretRef", &sp.client_secret_ref),
                ("clientCertificateRef", &sp.client_certificate_ref),
            ] {
                if let Some(r) = r {
                    validate_secret_key_ref(r, &format!("spec.servicePrincipal.{field}"), v);
                }
            }
        }
        if let Some(wi) = &self.workload_identity {
            v.pattern(
                &wi.client_id,
                GUID_PATTERN,
                "spec.workloadIdentity.clientId",
                "a client id GUID",
            );
            v.pattern(
                &wi.service_account_name,
                K8S_NAME_PATTERN,
                "spec.workloadIdentity.serviceAccountName",
                "a ServiceAccount name",
            );
        }
        if let Some(mi) = &self.managed_identity {
            v.pattern_opt(
                mi.client_id.as_deref(),
                GUID_PATTERN,
                "spec.managedIdentity.clientId",
                "a client id GUID",
            );
            v.pattern_opt(
                mi.resource_id.as_deref(),
                USER_ASSIGNED_IDENTITY_PATTERN,
                "spec.managedIdentity.resourceId",
                "a user-assigned identity resource id",
            );
            v.check(
                !(mi.client_id.is_some() && mi.resource_id.is_some()),
                "spec.managedIdentity",
                RULE_MI_ONE_SELECTOR.message,
            );
        }
    }
}

/// Checks a Secret key reference.
pub fn validate_secret_key_ref(r: &SecretKeyRef, field: &str, v: &mut Violations) {
    v.pattern(
        &r.name,
        K8S_NAME_PATTERN,
        format!("{field}.name"),
        "a Secret name",
    );
    v.pattern(
        &r.key,
        DATA_KEY_PATTERN,
        format!("{field}.key"),
        "a Secret data key",
    );
}

impl Validate for AzureCredential {
    fn validate(&self) -> Vec<Violation> {
        let mut v = Violations::default();
        let c = &self.spec.credential;
        v.check(
            c.managed_identity.is_none() && c.azure_cli.is_none(),
            if c.managed_identity.is_some() {
                "spec.managedIdentity"
            } else {
                "spec.azureCli"
            },
            RULE_NAMESPACED_SOURCES.message,
        );
        c.validate_into(&mut v);
        v.into_vec()
    }
}

impl Validate for ClusterAzureCredential {
    fn validate(&self) -> Vec<Violation> {
        let mut v = Violations::default();
        self.spec.credential.validate_into(&mut v);
        let admitted = &self.spec.allowed_namespaces;
        v.at_most(admitted.names.len(), 256, "spec.allowedNamespaces.names");
        v.distinct(
            &admitted.names,
            "spec.allowedNamespaces.names",
            str::to_owned,
        );
        if let Some(selector) = &admitted.selector {
            validate_selector(&mut v, selector, "spec.allowedNamespaces.selector");
        }
        v.at_most(self.spec.allowed_scopes.len(), 64, "spec.allowedScopes");
        for (i, name) in self.spec.allowed_namespaces.names.iter().enumerate() {
            v.pattern(
                name,
                NAMESPACE_PATTERN,
                format!("spec.allowedNamespaces.names[{i}]"),
                "a namespace name",
            );
        }
        v.check(
            !self.spec.allowed_scopes.is_empty(),
            "spec.allowedScopes",
            "list at least one ARM scope objects using this credential may touch, e.g. /subscriptions/<id>/resourceGroups/rg-aml-{namespace}",
        );
        for (i, scope) in self.spec.allowed_scopes.iter().enumerate() {
            let field = format!("spec.allowedScopes[{i}]");
            v.pattern(
                scope,
                SCOPE_PATTERN,
                &field,
                "a subscription, resource group or resource id, optionally with {namespace}",
            );
            // The same strict parse the operator applies to every id it touches.
            if let Err(e) = crate::azure::scope::ArmPath::parse(
                &scope.replace(crate::azure::scope::NAMESPACE_PLACEHOLDER, "ns"),
            ) {
                v.check(false, &field, e);
            }
        }
        let audiences = self.spec.allowed_audiences.as_deref().unwrap_or_default();
        v.at_most(audiences.len(), 32, "spec.allowedAudiences");
        v.audiences(
            audiences,
            "spec.allowedAudiences",
            RULE_AUDIENCES_AS_RESOURCES.message,
        );
        for (i, audience) in audiences.iter().enumerate() {
            v.check(
                !audience.ends_with('/'),
                format!("spec.allowedAudiences[{i}]"),
                RULE_AUDIENCES_AS_RESOURCES.message,
            );
        }
        v.into_vec()
    }
}
