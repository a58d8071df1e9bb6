//! Field types shared by several kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Lower-case GUID, as Entra ID and ARM print tenant, client, subscription and object ids.
pub const GUID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
// Character classes are spelled out in ASCII (`[A-Za-z0-9_]`, never `\w` or `\d`): the API server
// evaluates these patterns with Go's regexps, where `\w` is ASCII, while Rust's `\w` is Unicode —
// a different rule, and `[-\w._()]{1,90}` compiles to over 5 MB there (once per id pattern).

/// What every ARM resource id begins with, up to its resource provider.
macro_rules! arm_id_prefix {
    () => {
        r"^/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/resourceGroups/[-A-Za-z0-9_.()]{1,90}/providers/"
    };
}

/// An ARM resource id: `/subscriptions/{guid}/resourceGroups/{rg}/providers/{ns}/{type}/{name}[/...]`,
/// with no whitespace anywhere (ARM refuses it, and a pasted id often ends in some).
pub const RESOURCE_ID_PATTERN: &str = concat!(
    arm_id_prefix!(),
    r"[A-Za-z0-9]+\.[A-Za-z0-9.]+/[A-Za-z0-9]+/[^/\s]+(/[A-Za-z0-9]+/[^/\s]+)*$"
);
/// A storage account id (names: 3-24 lower-case letters and digits).
pub const STORAGE_ACCOUNT_ID_PATTERN: &str = concat!(
    arm_id_prefix!(),
    r"Microsoft\.Storage/storageAccounts/[a-z0-9]{3,24}$"
);
/// A storage account id, or one of its blob containers'.
pub const STORAGE_SCOPE_PATTERN: &str = concat!(
    arm_id_prefix!(),
    r"Microsoft\.Storage/storageAccounts/[a-z0-9]{3,24}(/blobServices/default/containers/[a-z0-9](-?[a-z0-9]){2,62})?$"
);
/// A key vault id (names: 3-24 letters, digits and hyphens, starting with a letter).
pub const KEY_VAULT_ID_PATTERN: &str = concat!(
    arm_id_prefix!(),
    r"Microsoft\.KeyVault/vaults/[a-zA-Z][-a-zA-Z0-9]{1,22}[a-zA-Z0-9]$"
);
/// A key vault id, or one of its secrets'.
pub const KEY_VAULT_SCOPE_PATTERN: &str = concat!(
    arm_id_prefix!(),
    r"Microsoft\.KeyVault/vaults/[a-zA-Z][-a-zA-Z0-9]{1,22}[a-zA-Z0-9](/secrets/[-a-zA-Z0-9]{1,127})?$"
);
/// A container registry id (names: 5-50 letters and digits).
pub const REGISTRY_ID_PATTERN: &str = concat!(
    arm_id_prefix!(),
    r"Microsoft\.ContainerRegistry/registries/[a-zA-Z0-9]{5,50}$"
);
/// An Application Insights component id (ARM itself often writes the provider in lower case).
pub const APPLICATION_INSIGHTS_ID_PATTERN: &str = concat!(
    arm_id_prefix!(),
    r"[Mm]icrosoft\.[Ii]nsights/components/[^/\s]{1,260}$"
);
/// A user-assigned managed identity resource id.
pub const USER_ASSIGNED_IDENTITY_PATTERN: &str = concat!(
    arm_id_prefix!(),
    r"Microsoft\.ManagedIdentity/userAssignedIdentities/[A-Za-z0-9][-A-Za-z0-9_]{2,127}$"
);
/// An ARM scope a shared credential may touch: a subscription, a resource group or a resource id,
/// where `{namespace}` may stand in a resource group or resource name.
pub const SCOPE_PATTERN: &str = r"^/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(/resourceGroups/([-A-Za-z0-9_.()]|\{namespace\})+(/providers/[A-Za-z0-9]+\.[A-Za-z0-9.]+(/[A-Za-z0-9]+/([-A-Za-z0-9_.()]|\{namespace\})+)+)?)?$";
/// A token audience (resource): an https URI or an `api://` application id URI.
pub const AUDIENCE_PATTERN: &str = r"^(https|api)://[^\s]+$";
/// ARM resource group names: 1-90 of letters, digits, `-_.()`, not ending in a period.
pub const RESOURCE_GROUP_PATTERN: &str = r"^[-A-Za-z0-9_.()]{0,89}[-A-Za-z0-9_()]$";
/// A Kubernetes object name (DNS-1123 subdomain).
pub const K8S_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$";
/// A namespace name (DNS-1123 label).
pub const NAMESPACE_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
/// A Kubernetes Secret/ConfigMap data key.
pub const DATA_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]{1,253}$";
/// A Go-style duration as Kubernetes APIs write it: `90m`, `1h30m`, `45s`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$";
/// An Azure region name as ARM writes it, e.g. `eastus`.
pub const LOCATION_PATTERN: &str = r"^[a-z0-9]+$";
/// An https endpoint with no path, e.g. `https://login.microsoftonline.com`.
pub const HTTPS_ENDPOINT_PATTERN: &str = r"^https://[^/\s]+/?$";
/// A DNS suffix, e.g. `core.windows.net`.
pub const DNS_SUFFIX_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A label key: an optional DNS-subdomain prefix and `/`, then a name of letters, digits, `-_.`.
pub const LABEL_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/// A label value: empty, or up to 63 letters, digits, `-_.` starting and ending alphanumeric.
pub const LABEL_VALUE_PATTERN: &str = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$";

/// A key in a Secret of the custom resource's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this object.
    #[schemars(regex(pattern = K8S_NAME_PATTERN))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(regex(pattern = DATA_KEY_PATTERN))]
    pub key: String,
}

/// Which kind of credential a reference points to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum CredentialKind {
    /// An `AzureCredential` in the referencing object's namespace.
    #[default]
    AzureCredential,
    /// A `ClusterAzureCredential` whose `allowedNamespaces` admits the referencing object's namespace.
    ClusterAzureCredential,
}

/// Reference to the credential the operator signs in with for this object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRef {
    /// `AzureCredential` (same namespace, the default) or `ClusterAzureCredential`.
    #[serde(default)]
    pub kind: CredentialKind,
    /// Name of the credential object.
    #[schemars(regex(pattern = K8S_NAME_PATTERN))]
    pub name: String,
}

/// Reference to an object of this API in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the object, in the same namespace as this one.
    #[schemars(regex(pattern = K8S_NAME_PATTERN))]
    pub name: String,
}

/// Status fields every kind reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current state, in metav1.Condition shape. `Ready` sums up the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// When the operator looks again at an object that is not ready (RFC 3339); the interval
    /// grows while it stays so. Absent when ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_time: Option<String>,
    /// Cleanup attempts that failed since deletion began; after the operator's limit the object
    /// is released with a Warning Event saying what was left in Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_failures: Option<i64>,
}

/// `conditions` as a list map keyed by `type`, as Kubernetes' own types declare it.
fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

/// What an Azure object recorded in a status is.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum AzureResourceKind {
    /// A federated identity credential the operator wrote (trusting a ServiceAccount of this
    /// namespace).
    FederatedIdentityCredential,
    /// A role assignment the operator made.
    RoleAssignment,
    /// An access policy the operator added to a key vault that does not use Azure RBAC
    /// (`{vault id}/accessPolicies/{object id}`).
    VaultAccessPolicy,
    /// A user-assigned identity the object uses; removed only if the operator created it and no
    /// other object holds it.
    UserAssignedIdentity,
    /// A workspace connection the operator made.
    WorkspaceConnection,
    /// A datastore the operator registered.
    Datastore,
    /// A workspace the operator created.
    Workspace,
}

/// One Azure object the operator made or holds for this object. Recorded before it is created, so
/// cleanup and revocation walk this record, never the spec as edited later.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureResource {
    /// What it is.
    pub kind: AzureResourceKind,
    /// Its ARM id.
    pub id: String,
}

impl AzureResource {
    /// A record of `kind` at `id`.
    pub fn new(kind: AzureResourceKind, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
        }
    }

    /// Whether this is the same Azure object as `other` (ARM ids are case-insensitive).
    pub fn same(&self, other: &AzureResource) -> bool {
        self.kind == other.kind && self.id.eq_ignore_ascii_case(&other.id)
    }
}

/// Implemented by every kind's status so the shared reconciler can read and write the common part.
pub trait HasCommonStatus {
    /// The common part of the status.
    fn common(&self) -> &CommonStatus;
    /// The common part of the status, mutable.
    fn common_mut(&mut self) -> &mut CommonStatus;
}

macro_rules! impl_has_common_status {
    ($($status:ty),* $(,)?) => {$(
        impl $crate::api::common::HasCommonStatus for $status {
            fn common(&self) -> &$crate::api::common::CommonStatus { &self.common }
            fn common_mut(&mut self) -> &mut $crate::api::common::CommonStatus { &mut self.common }
        }
    )*};
}
pub(crate) use impl_has_common_status;
