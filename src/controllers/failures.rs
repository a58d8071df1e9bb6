//! One table from error class to what an object reports: the condition reason and when the
//! operator tries again. Every not-ready `Ready` transition is a Warning Event with that reason
//! (`controllers/mod.rs`); consecutive failures stretch the retry with the object's backoff.

use std::time::Duration;

use super::credentials::ResolveError;
use crate::api::conditions::Reason;
use crate::azure::AzureError;

impl AzureError {
    /// The condition reason.
    pub fn reason(&self) -> Reason {
        self.verdict().0
    }

    /// When to try again.
    pub fn retry(&self) -> Duration {
        self.verdict().1
    }

    fn verdict(&self) -> (Reason, Duration) {
        const SOON: Duration = Duration::from_secs(30);
        const LATER: Duration = Duration::from_secs(300);
        match self {
            // Azure said when; the ARM client has capped it.
            AzureError::Throttled { retry_after, .. } => {
                (Reason::Throttled, Duration::from_secs(*retry_after))
            }
            AzureError::Transport(_) => (Reason::AzureUnreachable, SOON),
            AzureError::Arm { status, .. } if *status >= 500 => (Reason::AzureError, SOON),
            AzureError::Entra { .. } => (Reason::AuthenticationFailed, LATER),
            AzureError::Arm { status: 403, .. } => (Reason::PermissionDenied, LATER),
            AzureError::Arm { status: 404, .. } => (Reason::NotFound, LATER),
            AzureError::Arm { .. } => (Reason::AzureError, LATER),
            AzureError::DataPlane {
                status: 401 | 403, ..
            } => (Reason::PermissionDenied, LATER),
            AzureError::DataPlane { .. } => (Reason::AzureError, LATER),
            AzureError::Credential(_) => (Reason::CredentialInvalid, LATER),
            AzureError::Unexpected(_) => (Reason::UnexpectedResponse, LATER),
            // Only a spec or credential change helps, and either reconciles at once.
            AzureError::OutOfScope(_) => (Reason::OutOfScope, Duration::from_secs(3600)),
        }
    }
}

impl ResolveError {
    /// The condition reason.
    pub fn reason(&self) -> Reason {
        match self {
            ResolveError::Denied(_) => Reason::Denied,
            ResolveError::NotFound(_) => Reason::CredentialNotFound,
            ResolveError::Invalid(_) => Reason::CredentialInvalid,
            ResolveError::NotImplemented(_) => Reason::NotImplemented,
            ResolveError::CustomCloudNotAllowed(_) => Reason::CustomCloudNotAllowed,
            ResolveError::Kube(_) => Reason::TemporarilyUnavailable,
        }
    }

    /// When to try again: a Secret, credential or namespace label that appears reconciles the
    /// object at once, so this is only the fallback.
    pub fn retry(&self) -> Duration {
        Duration::from_secs(300)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_retry_soon_and_throttling_when_azure_says() {
        let throttled = AzureError::Throttled {
            code: "TooManyRequests".into(),
            retry_after: 42,
        };
        assert_eq!(
            (throttled.reason(), throttled.retry()),
            (Reason::Throttled, Duration::from_secs(42))
        );
        let unreachable = AzureError::Transport("reset".into());
        assert_eq!(unreachable.retry(), Duration::from_secs(30));
        let scope = AzureError::OutOfScope("x".into());
        assert_eq!(scope.reason(), Reason::OutOfScope);
        assert!(scope.retry() > unreachable.retry());
    }
}
