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
    FederationValid,
    PermissionsVerified,
    ConnectionReady,
    TokenIssued,
    Ready,
];

/// Declares [`Reason`] and its text, the variant's name.
macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// A condition reason: why a condition has its status.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            /// The reason as written in status.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            /// The reason a status says, if it is one of these.
            pub fn parse(text: &str) -> Option<Reason> {
                match text {
                    $(stringify!($name) => Some(Reason::$name),)*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    // The spec and the credential.
    /// The spec breaks a validation rule; the message names the field.
    InvalidSpec,
    /// An id or audience lies outside the credential's `allowedScopes` / `allowedAudiences`.
    OutOfScope,
    /// The namespace is not admitted by the ClusterAzureCredential.
    Denied,
    /// The credential, or a Secret or ServiceAccount it names, does not exist.
    CredentialNotFound,
    /// The credential's spec or Secret cannot be used.
    CredentialInvalid,
    /// A namespaced credential names a custom cloud host the operator does not allow.
    CustomCloudNotAllowed,
    /// The credential signed in.
    Authenticated,
    /// The credential resolved and signed in for this object.
    Resolved,
    /// Entra ID refused the sign-in.
    AuthenticationFailed,
    /// A feature this version does not have.
    NotImplemented,
    // Azure.
    /// Azure refused for lack of a role.
    PermissionDenied,
    /// Azure does not have what was asked for.
    NotFound,
    /// Azure refused the request.
    AzureError,
    /// Azure asked to slow down.
    Throttled,
    /// Azure could not be reached.
    AzureUnreachable,
    /// Azure answered something the operator does not accept.
    UnexpectedResponse,
    /// An operation did not finish in time.
    Timeout,
    /// Entra ID or ARM is temporarily unavailable.
    TemporarilyUnavailable,
    /// An Azure object of that name exists and is not this object's.
    AzureTargetConflict,
    /// A Secret or ConfigMap of that name exists and is not this object's.
    TargetConflict,
    /// Something the spec no longer asks for could not be removed from Azure yet.
    RevocationPending,
    /// Deletion waits for objects that depend on this one.
    WaitingForDependents,
    // Workspaces.
    /// The referenced Workspace does not exist.
    WorkspaceNotFound,
    /// The workspace is in place.
    WorkspaceReady,
    /// The workspace's identity is not known yet.
    WorkspaceIdentityUnknown,
    /// The workspace identity is the one declared.
    IdentityMatches,
    /// The workspace identity differs from the spec.
    IdentityMismatch,
    /// The workspace reports no principal for its primary user-assigned identity.
    PrimaryIdentityUnknown,
    /// The workspace's registry is not known (needed for AcrPull).
    RegistryUnknown,
    /// Roles are granted.
    RolesGranted,
    /// The workspace identity holds its role table.
    RoleAssignmentsEnsured,
    /// The workspace's registry connection is in place.
    Connected,
    /// A grant is in place.
    Granted,
    /// A key vault that authorizes with access policies cannot give what is asked: the principal's
    /// entry, which the operator did not make, lacks permissions, or the grant names one secret.
    AccessPolicyIncomplete,
    // Identities and computes.
    /// The identity is in place.
    IdentityReady,
    /// A user-assigned identity does not exist.
    IdentityNotFound,
    /// The identity has no principal yet.
    IdentityPending,
    /// The identity is not known.
    IdentityUnknown,
    /// The principal is not known.
    PrincipalUnknown,
    /// The compute does not exist.
    ComputeNotFound,
    /// A system-assigned identity cannot be minted for from outside its compute.
    SystemAssignedIdentity,
    /// The compute's system-assigned identity is reported.
    SystemAssignedReported,
    /// The federated identity credentials are in place.
    Federated,
    /// The identity already has Azure's maximum of federated identity credentials.
    FederatedCredentialLimit,
    /// The federated ServiceAccount does not exist.
    ServiceAccountNotFound,
    /// The referenced ComputeIdentity does not exist.
    ComputeIdentityNotFound,
    /// The referenced ComputeIdentity is not ready.
    ComputeIdentityPending,
    // Outputs.
    /// Credentials were written.
    Issued,
    /// The token Secret holds valid tokens.
    TokensIssued,
    /// The access Secret holds valid credentials.
    AccessIssued,
    /// The pull Secret holds valid credentials.
    PullSecretIssued,
    /// Credentials cannot be minted for this identity from the cluster.
    CannotMint,
    /// The spec asks for the managed identity endpoint, which this operator does not serve.
    EndpointNotServed,
    /// The datastore is registered.
    Registered,
    /// The spec does not ask for this step.
    NotRequested,
    /// The step has not run yet.
    NotReached,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_back_what_they_write() {
        for reason in [Reason::InvalidSpec, Reason::OutOfScope, Reason::NotReached] {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::parse("Forged"), None);
    }
}
