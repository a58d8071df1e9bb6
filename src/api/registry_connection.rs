//! `RegistryConnection`: an Azure Container Registry reachable by pods and by the workspace.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::*;
use super::credential::validate_secret_key_ref;
use super::rules::{CelRule, cel_rules};
use super::validation::{Validate, Violation, Violations, shown};

/// A workspace connection name.
pub const CONNECTION_NAME_PATTERN: &str = r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}$";
/// A registry login server, e.g. `contosoregistry.azurecr.io`.
pub const LOGIN_SERVER_PATTERN: &str = r"^[a-zA-Z0-9]{5,50}\.[a-z0-9.-]+[a-z]$";

/// The registry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    /// Login server, e.g. `contosoregistry.azurecr.io`.
    #[schemars(regex(pattern = LOGIN_SERVER_PATTERN))]
    pub login_server: String,
    /// ARM resource id of the registry (for grants, `listCredentials` and the workspace connection).
    #[schemars(regex(pattern = REGISTRY_ID_PATTERN))]
    pub resource_id: String,
}

/// How pull credentials are obtained.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RegistryAuthType {
    /// The registry's admin user, read with `listCredentials`.
    AdminUser,
    /// A managed identity's AAD token exchanged for an ACR refresh token.
    ManagedIdentity,
    /// A service principal's AAD token exchanged for an ACR refresh token.
    ServicePrincipal,
}

/// The managed identity that pulls.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = registry_identity_rules)]
pub struct RegistryManagedIdentity {
    /// A ComputeIdentity (same namespace) whose default identity pulls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_identity_ref: Option<LocalObjectRef>,
    /// Client id of a user-assigned identity (with resourceId, instead of computeIdentityRef).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub client_id: Option<String>,
    /// Resource id of that user-assigned identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = USER_ASSIGNED_IDENTITY_PATTERN))]
    pub resource_id: Option<String>,
    /// A ServiceAccount of this namespace to pull as that identity (with clientId and resourceId):
    /// the operator trusts it on the identity with a federated identity credential for this
    /// cluster's issuer, as a ComputeIdentity's federation does, and removes it when no longer
    /// named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = K8S_NAME_PATTERN))]
    pub service_account: Option<String>,
}

/// A service principal that pulls.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryServicePrincipal {
    /// Client id of the service principal.
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub client_id: String,
    /// Secret key with its client secret.
    pub client_secret_ref: SecretKeyRef,
}

/// Registry authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = registry_auth_rules)]
pub struct RegistryAuth {
    /// `AdminUser`, `ManagedIdentity` or `ServicePrincipal`.
    #[serde(rename = "type")]
    pub type_: RegistryAuthType,
    /// The identity, with type ManagedIdentity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_identity: Option<RegistryManagedIdentity>,
    /// The service principal, with type ServicePrincipal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_principal: Option<RegistryServicePrincipal>,
}

/// A `ContainerRegistry` connection in the workspace, as `az ml connection create` makes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceConnection {
    /// Name of the connection in the workspace.
    #[schemars(regex(pattern = CONNECTION_NAME_PATTERN))]
    pub name: String,
}

/// Roles the operator grants for this registry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryGrants {
    /// AcrPull for the pulling identity on the registry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acr_pull: bool,
    /// Managed Identity Operator for the workspace identity on the pulling user-assigned identity,
    /// so image builds can use it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub managed_identity_operator: bool,
}

/// Where the pull secret goes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = registry_target_rules)]
pub struct RegistryTarget {
    /// Name of the `kubernetes.io/dockerconfigjson` Secret, in this namespace.
    #[schemars(regex(pattern = K8S_NAME_PATTERN))]
    pub secret_name: String,
    /// ServiceAccounts of this namespace that get the Secret in `imagePullSecrets`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        extend("x-kubernetes-list-type" = "set"),
        inner(regex(pattern = K8S_NAME_PATTERN))
    )]
    pub service_accounts: Vec<String>,
    /// Renew the pull Secret this long before its ACR refresh token expires (a duration such as
    /// `30m`, between 1m and 2h: the token lives 3 hours); not with renewBeforePercentage, nor with
    /// auth AdminUser (the admin password does not expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub renew_before: Option<String>,
    /// Renew the pull Secret when this percentage of its lifetime is left (1-99; default 33:
    /// renew at two thirds of the lifetime); not with renewBefore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub renew_before_percentage: Option<i32>,
}

/// A container registry connection.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "amlidentity.io",
    version = "v1alpha1",
    kind = "RegistryConnection",
    doc = "A container registry: the pull Secret for pods, its grants and an optional workspace connection.",
    namespaced,
    status = "RegistryConnectionStatus",
    shortname = "amlrc",
    category = "aml",
    printcolumn = r#"{"name":"Registry","type":"string","jsonPath":".spec.registry.loginServer"}"#,
    printcolumn = r#"{"name":"Auth","type":"string","jsonPath":".spec.auth.type"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = registry_connection_rules)]
pub struct RegistryConnectionSpec {
    /// The Workspace (same namespace); required for a workspace connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_ref: Option<LocalObjectRef>,
    /// The credential for ARM calls when there is no workspaceRef (otherwise the workspace's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_ref: Option<CredentialRef>,
    /// The registry.
    pub registry: Registry,
    /// How pull credentials are obtained.
    pub auth: RegistryAuth,
    /// Create this workspace connection (ManagedIdentity auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_connection: Option<WorkspaceConnection>,
    /// Roles to grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<RegistryGrants>,
    /// The pull Secret.
    pub target: RegistryTarget,
}

/// One `imagePullSecrets` entry the operator added.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullSecretAdded {
    /// The ServiceAccount, in this namespace.
    pub service_account: String,
    /// The Secret name added to its `imagePullSecrets`.
    pub secret_name: String,
}

/// Observed state of a registry connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryConnectionStatus {
    /// Conditions and observed generation.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// When the refresh token in the Secret expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the operator renews it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<String>,
    /// When writing the credentials last failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<String>,
    /// Failed attempts since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<i64>,
    /// Azure objects the operator made or holds for this object, recorded before it makes them:
    /// what revocation and cleanup remove (never the spec as edited later).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub azure_resources: Vec<AzureResource>,
    /// ServiceAccounts this object added its pull Secret to (only these entries are removed again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets_added: Vec<ImagePullSecretAdded>,
}
impl_has_common_status!(RegistryConnectionStatus);

/// The auth sub-object matches the type.
pub const RULE_AUTH_MATCHES_TYPE: CelRule = CelRule {
    rule: "has(self.managedIdentity) == (self.type == 'ManagedIdentity') && has(self.servicePrincipal) == (self.type == 'ServicePrincipal')",
    message: "auth: set managedIdentity exactly with type ManagedIdentity and servicePrincipal exactly with type ServicePrincipal",
};
/// One way to name the identity.
pub const RULE_IDENTITY_REF_OR_IDS: CelRule = CelRule {
    rule: "has(self.computeIdentityRef) ? !has(self.clientId) && !has(self.resourceId) && !has(self.serviceAccount) : has(self.clientId) && has(self.resourceId) && has(self.serviceAccount)",
    message: "auth.managedIdentity takes computeIdentityRef (whose federation pulls), or clientId, resourceId and serviceAccount together (the ServiceAccount of this namespace the operator federates with that identity to pull as it)",
};
/// ARM calls need a credential.
pub const RULE_CREDENTIAL_SOURCE: CelRule = CelRule {
    rule: "has(self.workspaceRef) || has(self.credentialRef)",
    message: "set workspaceRef (its credential is used) or credentialRef",
};
/// The workspace connection needs a workspace and a managed identity.
pub const RULE_CONNECTION_NEEDS_WORKSPACE: CelRule = CelRule {
    rule: "!has(self.workspaceConnection) || (has(self.workspaceRef) && self.auth.type == 'ManagedIdentity')",
    message: "workspaceConnection needs workspaceRef and auth.type ManagedIdentity (the connection stores ManagedIdentity credentials)",
};

/// One renewal setting at most.
pub const RULE_ONE_PULL_RENEWAL: CelRule = CelRule {
    rule: "!(has(self.renewBefore) && has(self.renewBeforePercentage))",
    message: "target takes renewBefore or renewBeforePercentage, not both",
};
/// `renewBefore` within the ACR refresh token's three hours.
pub const RULE_PULL_RENEW_BEFORE_BOUNDS: CelRule = CelRule {
    rule: "!has(self.renewBefore) || (duration(self.renewBefore) >= duration('1m') && duration(self.renewBefore) <= duration('2h'))",
    message: "target.renewBefore must be between 1m and 2h: the ACR refresh token in the pull Secret lives 3 hours",
};
/// Renewal settings need something that expires.
pub const RULE_RENEWAL_NEEDS_EXPIRY: CelRule = CelRule {
    rule: "self.auth.type != 'AdminUser' || (!has(self.target.renewBefore) && !has(self.target.renewBeforePercentage))",
    message: "target.renewBefore and renewBeforePercentage apply to ACR refresh tokens: with auth.type AdminUser the pull Secret holds the admin password, which does not expire",
};

cel_rules!(registry_auth_rules, &[RULE_AUTH_MATCHES_TYPE]);
cel_rules!(
    registry_target_rules,
    &[RULE_ONE_PULL_RENEWAL, RULE_PULL_RENEW_BEFORE_BOUNDS]
);
cel_rules!(registry_identity_rules, &[RULE_IDENTITY_REF_OR_IDS]);
cel_rules!(
    registry_connection_rules,
    &[
        RULE_CREDENTIAL_SOURCE,
        RULE_CONNECTION_NEEDS_WORKSPACE,
        RULE_RENEWAL_NEEDS_EXPIRY
    ]
);

impl Validate for RegistryConnection {
    fn validate(&self) -> Vec<Violation> {
        let s = &self.spec;
        let mut v = Violations::default();
        if let Some(w) = &s.workspace_ref {
            v.pattern(
                &w.name,
                K8S_NAME_PATTERN,
                "spec.workspaceRef.name",
                "a Workspace name",
            );
        }
        if let Some(c) = &s.credential_ref {
            v.pattern(
                &c.name,
                K8S_NAME_PATTERN,
                "spec.credentialRef.name",
                "a credential name",
            );
        }
        v.check(
            s.workspace_ref.is_some() || s.credential_ref.is_some(),
            "spec.credentialRef",
            RULE_CREDENTIAL_SOURCE.message,
        );
        v.pattern(
            &s.registry.login_server,
            LOGIN_SERVER_PATTERN,
            "spec.registry.loginServer",
            "a login server such as myregistry.azurecr.io",
        );
        v.pattern(
            &s.registry.resource_id,
            REGISTRY_ID_PATTERN,
            "spec.registry.resourceId",
            "a Microsoft.ContainerRegistry/registries resource id",
        );
        // ACR names its login server after the registry: `<name>.azurecr.io` (or the cloud's suffix).
        let registry_name = s
            .registry
            .resource_id
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let server_name = s
            .registry
            .login_server
            .split('.')
            .next()
            .unwrap_or_default();
        v.check(
            server_name.eq_ignore_ascii_case(registry_name),
            "spec.registry.loginServer",
            format!(
                "{} is not the login server of registry {}: write {name}.azurecr.io, or {name} and your cloud's registry suffix",
                shown(&s.registry.login_server),
                shown(registry_name),
                name = registry_name.to_ascii_lowercase()
            ),
        );
        let a = &s.auth;
        let mi = a.type_ == RegistryAuthType::ManagedIdentity;
        let sp = a.type_ == RegistryAuthType::ServicePrincipal;
        v.check(
            a.managed_identity.is_some() == mi && a.service_principal.is_some() == sp,
            "spec.auth",
            RULE_AUTH_MATCHES_TYPE.message,
        );
        if let Some(m) = &a.managed_identity {
            let ok = match &m.compute_identity_ref {
                Some(_) => {
                    m.client_id.is_none() && m.resource_id.is_none() && m.service_account.is_none()
                }
                None => {
                    m.client_id.is_some() && m.resource_id.is_some() && m.service_account.is_some()
                }
            };
            v.check(
                ok,
                "spec.auth.managedIdentity",
                RULE_IDENTITY_REF_OR_IDS.message,
            );
            v.pattern_opt(
                m.client_id.as_deref(),
                GUID_PATTERN,
                "spec.auth.managedIdentity.clientId",
                "a client id GUID",
            );
            v.pattern_opt(
                m.resource_id.as_deref(),
                USER_ASSIGNED_IDENTITY_PATTERN,
                "spec.auth.managedIdentity.resourceId",
                "a user-assigned identity resource id",
            );
            v.pattern_opt(
                m.service_account.as_deref(),
                K8S_NAME_PATTERN,
                "spec.auth.managedIdentity.serviceAccount",
                "a ServiceAccount name",
            );
        }
        if let Some(p) = &a.service_principal {
            v.pattern(
                &p.client_id,
                GUID_PATTERN,
                "spec.auth.servicePrincipal.clientId",
                "a client id GUID",
            );
            validate_secret_key_ref(
                &p.client_secret_ref,
                "spec.auth.servicePrincipal.clientSecretRef",
                &mut v,
            );
        }
        if let Some(c) = &s.workspace_connection {
            v.pattern(
                &c.name,
                CONNECTION_NAME_PATTERN,
                "spec.workspaceConnection.name",
                "a connection name",
            );
            v.check(
                s.workspace_ref.is_some() && mi,
                "spec.workspaceConnection",
                RULE_CONNECTION_NEEDS_WORKSPACE.message,
            );
        }
        v.pattern(
            &s.target.secret_name,
            K8S_NAME_PATTERN,
            "spec.target.secretName",
            "a Secret name",
        );
        v.at_most(
            s.target.service_accounts.len(),
            64,
            "spec.target.serviceAccounts",
        );
        v.distinct(
            &s.target.service_accounts,
            "spec.target.serviceAccounts",
            str::to_owned,
        );
        for (i, sa) in s.target.service_accounts.iter().enumerate() {
            v.pattern(
                sa,
                K8S_NAME_PATTERN,
                format!("spec.target.serviceAccounts[{i}]"),
                "a ServiceAccount name",
            );
        }
        let t = &s.target;
        v.check(
            a.type_ != RegistryAuthType::AdminUser
                || (t.renew_before.is_none() && t.renew_before_percentage.is_none()),
            "spec.target",
            RULE_RENEWAL_NEEDS_EXPIRY.message,
        );
        v.renewal(
            "spec.target",
            t.renew_before.as_deref(),
            t.renew_before_percentage,
            RULE_ONE_PULL_RENEWAL.message,
            |secs| (60.0..=7200.0).contains(&secs),
            RULE_PULL_RENEW_BEFORE_BOUNDS.message,
        );
        v.into_vec()
    }
}
