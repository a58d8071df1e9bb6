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
