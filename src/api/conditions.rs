//! The condition types each kind reports in `status.conditions`.
//!
//! Every condition of a kind is always present: a step that was not reached in the latest
//! reconcile keeps what it last reported (and its `lastTransitionTime`), or is `Unknown` until it
//! first runs. `Ready` sums them up and comes last.

use std::fmt;

/// A condition type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// The object is usable; sums up the others.
    Ready,
    /// The credential the operator signs in with resolved and signed in.
    CredentialResolved,
    /// The workspace's identity is the one declared.
    IdentityReady,
    /// The workspace identity holds its role table.
    RoleAssignmentsReady,
    /// The identity holds the roles the spec grants it.
    PermissionsVerified,
    /// The federated identity credentials trust the listed ServiceAccounts.
    FederationValid,
    /// The datastore is registered in the workspace.
    Registered,
    /// The workspace's registry connection is in place.
    ConnectionReady,
    /// The Secret of expiring credentials holds valid ones.
    TokenIssued,
}

impl ConditionType {
    /// The type as written in status.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::CredentialResolved => "CredentialResolved",
            ConditionType::IdentityReady => "IdentityReady",
            ConditionType::RoleAssignmentsReady => "RoleAssignmentsReady",
            ConditionType::PermissionsVerified => "PermissionsVerified",
            ConditionType::FederationValid => "FederationValid",
            ConditionType::Registered => "Registered",
            ConditionType::ConnectionReady => "ConnectionReady",
            ConditionType::TokenIssued => "TokenIssued",
        }
    }
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

use ConditionType::*;

/// `AzureCredential` and `ClusterAzureCredential`.
pub const CREDENTIAL_CONDITIONS: &[ConditionType] = &[CredentialResolved, Ready];
/// `Workspace`.
pub const WORKSPACE_CONDITIONS: &[ConditionType] = &[
    CredentialResolved,
    IdentityReady,
    RoleAssignmentsReady,
    Ready,
];
/// `ComputeIdentity`.
pub const COMPUTE_IDENTITY_CONDITIONS: &[ConditionType] = &[
    CredentialResolved,
    PermissionsVerified,
    FederationValid,
    TokenIssued,
    Ready,
];
/// `Datastore`.
pub const DATASTORE_CONDITIONS: &[ConditionType] =
    &[CredentialResolved, Registered, TokenIssued, Ready];
/// `RegistryConnection`.
pub const REGISTRY_CONNECTION_CONDITIONS: &[ConditionType] = &[
    CredentialResolved,
    PermissionsVerified,
    ConnectionReady,
    TokenIssued,
    Ready,
];
