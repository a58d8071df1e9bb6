//! `ComputeIdentity`: the identity of an AML compute, its grants, and the token Secret for pods.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::*;
use super::rules::{CelRule, cel_rules};
use super::validation::{Validate, Violation, Violations};

/// AML compute names: 2-16 letters, digits and `-`, starting with a letter.
pub const COMPUTE_NAME_PATTERN: &str = r"^[a-zA-Z][a-zA-Z0-9-]{1,15}$";

/// A compute has a system-assigned identity or user-assigned ones, never both.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ComputeIdentityType {
    /// The compute's own identity; it cannot be minted outside the compute.
    SystemAssigned,
    /// One or more user-assigned identities; the first is the default identity.
    UserAssigned,
}

/// The compute's managed identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = compute_identity_type_rules)]
pub struct ComputeIdentitySpecIdentity {
    /// `SystemAssigned` or `UserAssigned` (an AML compute cannot have both).
    #[serde(rename = "type")]
    pub type_: ComputeIdentityType,
    /// Resource ids of the user-assigned identities; the first is `DEFAULT_IDENTITY_CLIENT_ID`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = USER_ASSIGNED_IDENTITY_PATTERN)))]
    pub user_assigned_identities: Vec<String>,
}

/// Create the listed user-assigned identities when they do not exist.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateIfMissing {
    /// Region to create missing identities in, e.g. `eastus`.
    #[schemars(regex(pattern = LOCATION_PATTERN))]
    pub location: String,
}

/// Roles the operator grants to the identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeGrants {
    /// AcrPull on the workspace's container registry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acr_pull: bool,
    /// Storage Blob Data Reader on these storage accounts or containers (resource ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        extend("x-kubernetes-list-type" = "set"),
        inner(regex(pattern = STORAGE_SCOPE_PATTERN))
    )]
    pub storage_blob_data_reader: Vec<String>,
    /// Key Vault Secrets User on these key vaults (resource ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        extend("x-kubernetes-list-type" = "set"),
        inner(regex(pattern = KEY_VAULT_SCOPE_PATTERN))
    )]
    pub key_vault_secrets_user: Vec<String>,
}

/// Federated identity credentials on the user-assigned identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Federation {
    /// ServiceAccounts of this namespace trusted as `system:serviceaccount:<ns>:<name>` with the
    /// cluster's issuer.
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "set"),
        inner(regex(pattern = K8S_NAME_PATTERN))
    )]
    pub service_accounts: Vec<String>,
}

/// The Secret of tokens that training pods mount.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = token_secret_rules)]
pub struct TokenSecret {
    /// Name of the Secret, in this namespace.
    #[schemars(regex(pattern = K8S_NAME_PATTERN))]
    pub name: String,
    /// Resources to mint tokens for, e.g. `https://storage.azure.com`.
    #[schemars(
        length(min = 1, max = 16),
        extend("x-kubernetes-list-type" = "set"),
        inner(regex(pattern = AUDIENCE_PATTERN))
    )]
    pub audiences: Vec<String>,
    /// Renew this long before expiry (a duration such as `15m`); not with renewBeforePercentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub renew_before: Option<String>,
    /// Renew when this percentage of the token's lifetime is left (1-99; default 33: renew at two
    /// thirds of the lifetime); not with renewBefore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub renew_before_percentage: Option<i32>,
    /// Serve this compute's identities to pods the way AML compute does: the Secret also gets
    /// `MSI_ENDPOINT` (the operator's in-cluster endpoint) and a `MSI_SECRET` for this object, so
    /// `ManagedIdentityCredential` answers any resource through the operator (UserAssigned only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub msi_endpoint: bool,
}

/// The identity of an AML compute and the credentials training pods get from it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "amlidentity.io",
    version = "v1alpha1",
    kind = "ComputeIdentity",
    doc = "The identity of an AML compute, its role grants, federation, and the token Secret training pods mount.",
    namespaced,
    status = "ComputeIdentityStatus",
    shortname = "amlci",
    category = "aml",
    printcolumn = r#"{"name":"Compute","type":"string","jsonPath":".spec.computeName"}"#,
    printcolumn = r#"{"name":"Identity","type":"string","jsonPath":".spec.identity.type"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".status.expiresAt","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = compute_identity_rules)]
pub struct ComputeIdentitySpec {
    /// The Workspace (same namespace) the compute belongs to.
    pub workspace_ref: LocalObjectRef,
    /// Name of the AML compute in the workspace.
    #[schemars(regex(pattern = COMPUTE_NAME_PATTERN))]
    pub compute_name: String,
    /// The compute's identity.
    pub identity: ComputeIdentitySpecIdentity,
    /// Create missing user-assigned identities (UserAssigned only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_if_missing: Option<CreateIfMissing>,
    /// PATCH the compute's identity in ARM, as `az ml compute update --identity-type` does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manage_compute: bool,
    /// Roles to grant the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<ComputeGrants>,
    /// ServiceAccounts federated with the user-assigned identity (UserAssigned only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<Federation>,
    /// The token Secret for pods; tokens are minted through the first federated ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<TokenSecret>,
}

/// Observed state of a compute identity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeIdentityStatus {
    /// Conditions and observed generation.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Client id of the default identity (`DEFAULT_IDENTITY_CLIENT_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Principal (object) id of the default identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Every user-assigned identity of the compute as ARM reports it, in spec order: the
    /// identities the managed identity endpoint may serve (`clientid`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<IdentityStatus>,
    /// When the earliest token in the Secret expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the operator renews the tokens (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<String>,
    /// When minting last failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<String>,
    /// Failed attempts since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<i64>,
    /// Azure objects the operator made or holds for this object, recorded before it makes them:
    /// what revocation and cleanup remove (never the spec as edited later).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub azure_resources: Vec<AzureResource>,
    /// What the last complete pass was made for (a hash of this object's and its workspace's
    /// generations): while it holds and the token Secret is still good, nothing is read from ARM
    /// until renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_for: Option<String>,
}
impl_has_common_status!(ComputeIdentityStatus);

/// A user-assigned identity of the compute, as ARM reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityStatus {
    /// Its resource id, as the spec lists it.
    pub resource_id: String,
    /// Its client (application) id.
    pub client_id: String,
    /// The tenant it belongs to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tenant_id: String,
}

/// SystemAssigned lists nothing; UserAssigned lists at least one identity.
pub const RULE_SYSTEM_XOR_USER: CelRule = CelRule {
    rule: "self.type == 'UserAssigned' ? (has(self.userAssignedIdentities) && size(self.userAssignedIdentities) > 0) : (!has(self.userAssignedIdentities) || size(self.userAssignedIdentities) == 0)",
    message: "an AML compute has a system-assigned identity or user-assigned ones, never both: list userAssignedIdentities only (and at least one) with type UserAssigned",
};
/// Only user-assigned identities can be created, federated and minted from outside the compute.
pub const RULE_USER_ASSIGNED_ONLY: CelRule = CelRule {
    rule: "self.identity.type == 'UserAssigned' || (!has(self.createIfMissing) && !has(self.federation))",
    message: "createIfMissing and federation need identity.type UserAssigned: a system-assigned identity exists only inside its compute",
};
/// Tokens are minted through a federated ServiceAccount.
pub const RULE_TOKENS_NEED_FEDERATION: CelRule = CelRule {
    rule: "!has(self.tokenSecret) || self.identity.type != 'UserAssigned' || (has(self.federation) && size(self.federation.serviceAccounts) > 0)",
    message: "tokenSecret needs federation.serviceAccounts: tokens are minted through workload identity federation with the first listed ServiceAccount",
};
/// The managed identity endpoint serves user-assigned identities, minted through federation.
pub const RULE_ENDPOINT_USER_ASSIGNED: CelRule = CelRule {
    rule: "!has(self.tokenSecret) || !has(self.tokenSecret.msiEndpoint) || !self.tokenSecret.msiEndpoint || self.identity.type == 'UserAssigned'",
    message: "tokenSecret.msiEndpoint needs identity.type UserAssigned: the endpoint mints through workload identity federation, which a system-assigned identity cannot use outside its compute",
};
/// One renewal setting at most.
pub const RULE_ONE_RENEWAL: CelRule = CelRule {
    rule: "!(has(self.renewBefore) && has(self.renewBeforePercentage))",
    message: "tokenSecret takes renewBefore or renewBeforePercentage, not both",
};
/// Audiences are resources; the operator turns each into the `<resource>/.default` scope.
pub const RULE_AUDIENCES_NOT_SCOPES: CelRule = CelRule {
    rule: "self.audiences.all(a, !a.endsWith('/.default'))",
    message: "tokenSecret.audiences lists resources without /.default, e.g. https://storage.azure.com: the operator asks Entra ID for <resource>/.default itself",
};
/// `renewBefore` below the shortest Entra token lifetime (about one hour).
pub const RULE_RENEW_BEFORE_BOUNDS: CelRule = CelRule {
    rule: "!has(self.renewBefore) || (duration(self.renewBefore) >= duration('1m') && duration(self.renewBefore) <= duration('45m'))",
    message: "tokenSecret.renewBefore must be between 1m and 45m: Entra access tokens live about an hour",
};

cel_rules!(compute_identity_type_rules, &[RULE_SYSTEM_XOR_USER]);
cel_rules!(
    compute_identity_rules,
    &[
        RULE_USER_ASSIGNED_ONLY,
        RULE_TOKENS_NEED_FEDERATION,
        RULE_ENDPOINT_USER_ASSIGNED
    ]
);
cel_rules!(
    token_secret_rules,
    &[
        RULE_ONE_RENEWAL,
        RULE_RENEW_BEFORE_BOUNDS,
        RULE_AUDIENCES_NOT_SCOPES
    ]
);

impl Validate for ComputeIdentity {
    fn validate(&self) -> Vec<Violation> {
        let s = &self.spec;
        let mut v = Violations::default();
        v.pattern(
            &s.workspace_ref.name,
            K8S_NAME_PATTERN,
            "spec.workspaceRef.name",
            "a Workspace name",
        );
        v.pattern(
            &s.compute_name,
            COMPUTE_NAME_PATTERN,
            "spec.computeName",
            "a compute name (2-16 letters, digits or '-', starting with a letter)",
        );
        let user = s.identity.type_ == ComputeIdentityType::UserAssigned;
        v.at_most(
            s.identity.user_assigned_identities.len(),
            16,
            "spec.identity.userAssignedIdentities",
        );
        for (i, uai) in s.identity.user_assigned_identities.iter().enumerate() {
            v.pattern(
                uai,
                USER_ASSIGNED_IDENTITY_PATTERN,
                format!("spec.identity.userAssignedIdentities[{i}]"),
                "a user-assigned identity resource id",
            );
        }
        v.check(
            user != s.identity.user_assigned_identities.is_empty(),
            "spec.identity.userAssignedIdentities",
            RULE_SYSTEM_XOR_USER.message,
        );
        if !user {
            let field = if s.create_if_missing.is_some() {
                "spec.createIfMissing"
            } else {
                "spec.federation"
            };
            v.check(
                s.create_if_missing.is_none() && s.federation.is_none(),
                field,
                RULE_USER_ASSIGNED_ONLY.message,
            );
        }
        if let Some(c) = &s.create_if_missing {
            v.pattern(
                &c.location,
                LOCATION_PATTERN,
                "spec.createIfMissing.location",
                "a region name such as eastus",
            );
        }
        if let Some(g) = &s.grants {
            for (field, ids, pattern, what) in [
                (
                    "storageBlobDataReader",
                    &g.storage_blob_data_reader,
                    STORAGE_SCOPE_PATTERN,
                    "a storage account or blob container resource id",
                ),
                (
                    "keyVaultSecretsUser",
                    &g.key_vault_secrets_user,
                    KEY_VAULT_SCOPE_PATTERN,
                    "a key vault or key vault secret resource id",
                ),
            ] {
                v.at_most(ids.len(), 32, format!("spec.grants.{field}"));
                v.distinct(ids, &format!("spec.grants.{field}"), |id| {
                    id.to_ascii_lowercase()
                });
                for (i, id) in ids.iter().enumerate() {
                    v.pattern(id, pattern, format!("spec.grants.{field}[{i}]"), what);
                }
            }
        }
        if let Some(f) = &s.federation {
            v.at_most(
                f.service_accounts.len(),
                16,
                "spec.federation.serviceAccounts",
            );
            v.distinct(
                &f.service_accounts,
                "spec.federation.serviceAccounts",
                str::to_owned,
            );
            for (i, sa) in f.service_accounts.iter().enumerate() {
                v.pattern(
                    sa,
                    K8S_NAME_PATTERN,
                    format!("spec.federation.serviceAccounts[{i}]"),
                    "a ServiceAccount name",
                );
            }
        }
        if let Some(t) = &s.token_secret {
            v.pattern(
                &t.name,
                K8S_NAME_PATTERN,
                "spec.tokenSecret.name",
                "a Secret name",
            );
            v.check(
                (1..=16).contains(&t.audiences.len()),
                "spec.tokenSecret.audiences",
                "list 1 to 16 audiences, e.g. https://storage.azure.com",
            );
            v.audiences(
                &t.audiences,
                "spec.tokenSecret.audiences",
                RULE_AUDIENCES_NOT_SCOPES.message,
            );
            let federated = s
                .federation
                .as_ref()
                .is_some_and(|f| !f.service_accounts.is_empty());
            v.check(
                !user || federated,
                "spec.federation.serviceAccounts",
                RULE_TOKENS_NEED_FEDERATION.message,
            );
            v.check(
                user || !t.msi_endpoint,
                "spec.tokenSecret.msiEndpoint",
                RULE_ENDPOINT_USER_ASSIGNED.message,
            );
            v.renewal(
                "spec.tokenSecret",
                t.renew_before.as_deref(),
                t.renew_before_percentage,
                RULE_ONE_RENEWAL.message,
                |secs| (60.0..=2700.0).contains(&secs),
                RULE_RENEW_BEFORE_BOUNDS.message,
            );
        }
        v.into_vec()
    }
}
