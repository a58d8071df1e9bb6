//! ARM resource bodies the operator reads and writes, shaped like the official examples.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// API versions the operator pins.
pub mod api_versions {
    /// Microsoft.ManagedIdentity.
    pub const MANAGED_IDENTITY: &str = "2024-11-30";
    /// Microsoft.Authorization role assignments.
    pub const AUTHORIZATION: &str = "2022-04-01";
}

/// ARM's error body.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    #[serde(default)]
    pub error: Option<ErrorDetail>,
    /// Some RPs answer without the `error` wrapper.
    #[serde(default)]
    pub code: Option<String>,
    /// Message when unwrapped.
    #[serde(default)]
    pub message: Option<String>,
}

/// ARM's error detail.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ErrorDetail {
    /// Error code, e.g. `AuthorizationFailed`.
    #[serde(default)]
    pub code: String,
    /// Message.
    #[serde(default)]
    pub message: String,
}

/// A user-assigned managed identity.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct UserAssignedIdentity {
    /// Resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Region.
    pub location: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Read-only ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<IdentityProperties>,
}

/// Ids of a user-assigned identity.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IdentityProperties {
    /// Tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Service principal object id.
    #[serde(default)]
    pub principal_id: Option<String>,
    /// Client id.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// A federated identity credential on a user-assigned identity.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FederatedIdentityCredential {
    /// Resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Issuer, subject and audiences.
    pub properties: FederatedIdentityCredentialProperties,
}

/// What a federated identity credential trusts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FederatedIdentityCredentialProperties {
    /// OIDC issuer URL.
    pub issuer: String,
    /// Subject, e.g. `system:serviceaccount:ns:sa`.
    pub subject: String,
    /// Audiences, e.g. `["api://AzureADTokenExchange"]`.
    pub audiences: Vec<String>,
}

/// A role assignment.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RoleAssignment {
    /// Resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name (a GUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Role, principal and scope.
    pub properties: RoleAssignmentProperties,
}

/// What a role assignment grants to whom.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignmentProperties {
    /// Role definition id (compare by its trailing GUID).
    pub role_definition_id: String,
    /// Principal (object) id.
    pub principal_id: String,
    /// `ServicePrincipal` for managed identities and applications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_type: Option<String>,
    /// Scope (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Free text; the operator marks its own assignments here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A list response.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    /// Items.
    pub value: Vec<T>,
    /// Next page.
    #[serde(default)]
    pub next_link: Option<String>,
}

/// More pinned API versions.
pub mod ml_api_versions {
    /// Microsoft.MachineLearningServices.
    pub const MACHINE_LEARNING: &str = "2025-12-01";
    /// Microsoft.Storage.
    pub const STORAGE: &str = "2025-08-01";
    /// Microsoft.ContainerRegistry.
    pub const CONTAINER_REGISTRY: &str = "2025-11-01";
    /// Microsoft.KeyVault (the vault resource and its access policies).
    pub const KEY_VAULT: &str = "2025-05-01";
}

/// Unknown fields kept so a GET-modify-PUT does not drop what the operator does not manage.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// `ManagedServiceIdentity` (common-types v3).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedServiceIdentity {
    /// `None`, `SystemAssigned`, `UserAssigned` or `SystemAssigned,UserAssigned`.
    #[serde(rename = "type")]
    pub type_: String,
    /// System-assigned principal (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// System-assigned tenant (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// User-assigned identities by resource id (send `{}` values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_assigned_identities: BTreeMap<String, UserAssignedIdentityRef>,
}

/// Ids of an assigned user-assigned identity (read-only; `{}` in requests).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserAssignedIdentityRef {
    /// Principal id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// An AML workspace.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Workspace {
    /// Resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<ManagedServiceIdentity>,
    /// Tags; the operator marks a workspace it created with its owner.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Properties.
    #[serde(default)]
    pub properties: WorkspaceProperties,
    /// Everything else (sku, kind, systemData…).
    #[serde(flatten)]
    pub extra: Extra,
}

/// Workspace properties the operator reads or sets.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceProperties {
    /// Workspace GUID (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// Storage account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account: Option<String>,
    /// Key vault id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault: Option<String>,
    /// Application Insights id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_insights: Option<String>,
    /// Container registry id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_registry: Option<String>,
    /// Primary user-assigned identity id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_user_assigned_identity: Option<String>,
    /// Provisioning state (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
    /// Tenant (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// MLflow tracking URI (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ml_flow_tracking_uri: Option<String>,
    /// Discovery URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_url: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An AML compute.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Compute {
    /// Resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<ManagedServiceIdentity>,
    /// Properties (`computeType`, `provisioningState`, type-specific `properties`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An AML datastore.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Datastore {
    /// Resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Properties.
    pub properties: DatastoreProperties,
}

/// Datastore properties (all datastore types).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatastoreProperties {
    /// `AzureBlob`, `AzureDataLakeGen1`, `AzureDataLakeGen2`, `AzureFile`.
    pub datastore_type: String,
    /// Credentials (secrets only in requests and `listSecrets`).
    pub credentials: DatastoreCredentials,
    /// Storage account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    /// Blob container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// ADLS Gen2 file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
    /// File share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_share_name: Option<String>,
    /// ADLS Gen1 store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_name: Option<String>,
    /// Storage DNS suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `None`, `WorkspaceSystemAssignedIdentity`, `WorkspaceUserAssignedIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_data_access_auth_identity: Option<String>,
    /// Tags; the operator marks a datastore it registered with its owner.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Everything else (description, isDefault…).
    #[serde(flatten)]
    pub extra: Extra,
}

/// Datastore credentials.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatastoreCredentials {
    /// `AccountKey`, `Certificate`, `None`, `Sas`, `ServicePrincipal`.
    pub credentials_type: String,
    /// The secrets (request only; GET returns just `secretsType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<DatastoreSecrets>,
    /// Everything else (tenantId, clientId, authorityUrl, resourceUrl, thumbprint).
    #[serde(flatten)]
    pub extra: Extra,
}

/// Datastore secrets, as sent in a PUT and returned by `listSecrets`. `Debug` hides the values.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatastoreSecrets {
    /// `AccountKey`, `Certificate`, `Sas`, `ServicePrincipal`.
    pub secrets_type: String,
    /// Account key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// SAS token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_token: Option<String>,
    /// Client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

impl std::fmt::Debug for DatastoreSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatastoreSecrets")
            .field("secrets_type", &self.secrets_type)
            .finish_non_exhaustive()
    }
}

/// A workspace connection.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkspaceConnection {
    /// Resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Properties.
    pub properties: ConnectionProperties,
}

/// Connection properties.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionProperties {
    /// Category, e.g. `ContainerRegistry`.
    pub category: String,
    /// Target, e.g. a login server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `ManagedIdentity`, `None`, …
    pub auth_type: String,
    /// Credentials (only in requests and `listsecrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<serde_json::Value>,
    /// Metadata; the operator marks a connection it made with its owner.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `listKeys` of a storage account. `Debug` hides the values.
#[derive(Clone, Deserialize)]
pub struct StorageAccountKeys {
    /// key1, key2.
    pub keys: Vec<StorageAccountKey>,
}

impl std::fmt::Debug for StorageAccountKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StorageAccountKeys({} keys)", self.keys.len())
    }
}

/// One storage account key.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccountKey {
    /// `key1`, `key2`.
    pub key_name: String,
    /// The key (base64).
    pub value: String,
}

/// A container registry.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Registry {
    /// Resource id.
    #[serde(default)]
    pub id: Option<String>,
    /// Properties.
    #[serde(default)]
    pub properties: RegistryProperties,
}

/// Registry properties the operator reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryProperties {
    /// Login server.
    #[serde(default)]
    pub login_server: Option<String>,
    /// Whether the admin user is enabled.
    #[serde(default)]
    pub admin_user_enabled: Option<bool>,
}

/// `listCredentials` of a registry. `Debug` hides the passwords.
#[derive(Clone, Deserialize)]
pub struct RegistryCredentials {
    /// Admin user name.
    pub username: String,
    /// Two passwords.
    pub passwords: Vec<RegistryPassword>,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A registry password.
#[derive(Clone, Deserialize)]
pub struct RegistryPassword {
    /// `password`, `password2`.
    pub name: String,
    /// The password.
    pub value: String,
}

/// A key vault as Resource Manager describes it (`Microsoft.KeyVault/vaults`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeyVault {
    /// Resource id.
    #[serde(default)]
    pub id: Option<String>,
    /// Properties.
    #[serde(default)]
    pub properties: KeyVaultProperties,
}

/// What the operator reads of a vault.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVaultProperties {
    /// The tenant whose principals the vault serves.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Data actions authorized by Azure RBAC (`true`) or by the access policies (`false`; also
    /// when absent: a vault created without the property uses access policies).
    #[serde(default)]
    pub enable_rbac_authorization: Option<bool>,
    /// The access policies (ignored by RBAC vaults).
    #[serde(default)]
    pub access_policies: Vec<AccessPolicyEntry>,
    /// The data-plane URI.
    #[serde(default)]
    pub vault_uri: Option<String>,
}

/// One access policy entry of a vault.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyEntry {
    /// Tenant of the principal.
    pub tenant_id: String,
    /// Object id of the principal.
    pub object_id: String,
    /// Set on a compound entry (an application acting for the principal), which does not let the
    /// principal act alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    /// What it may do.
    #[serde(default)]
    pub permissions: AccessPolicyPermissions,
}

/// The permissions of an access policy entry, per object type (names as ARM spells them; Key
/// Vault compares them case-insensitively).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessPolicyPermissions {
    /// Key permissions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Secret permissions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Certificate permissions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
    /// Storage account permissions (never given by the operator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<String>,
}
