//! Typed Azure errors. Messages carry Azure's codes and descriptions, never a secret or token.

/// An error from an Azure call.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// Entra ID refused a token request (`codes` are the AADSTS numbers).
    #[error("Entra ID refused the token request ({status}, AADSTS{codes}): {description}")]
    Entra {
        /// HTTP status.
        status: u16,
        /// AADSTS codes, comma-separated.
        codes: String,
        /// Entra's description (no secrets: Entra never echoes them).
        description: String,
    },
    /// ARM answered with an error body.
    #[error("ARM {method} {path} failed ({status} {code}): {message}")]
    Arm {
        /// HTTP method.
        method: String,
        /// Request path (no query string: SAS or tokens never ride in ARM paths, but keep it short).
        path: String,
        /// HTTP status.
        status: u16,
        /// ARM error code, e.g. `AuthorizationFailed`.
        code: String,
        /// ARM error message.
        message: String,
    },
    /// A data-plane service (ACR token service, Key Vault) refused the request.
    #[error("{code} ({status}): {message}")]
    DataPlane {
        /// HTTP status.
        status: u16,
        /// Service error code.
        code: String,
        /// Service message (never a secret: these services do not echo them).
        message: String,
    },
    /// Throttled, and the retry budget is spent; `retry_after` is Azure's hint in seconds.
    #[error("throttled by Azure ({code}); retry after {retry_after}s")]
    Throttled {
        /// ARM error code.
        code: String,
        /// Seconds until Azure accepts requests again.
        retry_after: u64,
    },
    /// The request never got an answer (connection, TLS, timeout).
    #[error("Azure could not be reached: {0}")]
    Transport(String),
    /// A credential could not be built or used (missing secret, bad configuration).
    #[error("credential: {0}")]
    Credential(String),
    /// Azure answered with something this client cannot read.
    #[error("unexpected response: {0}")]
    Unexpected(String),
    /// A request the operator refuses to send: an ARM id outside the object's allowed scopes, an
    /// id that is not well formed, or a follow-up URL on another host than the endpoint.
    #[error("{0}")]
    OutOfScope(String),
}

/// What an object reports for each error, and when it tries again: `controllers/failures.rs`.
impl AzureError {
    /// A response that does not read as `what`: how and where it broke, never a value from it
    /// (serde's messages quote the offending value, which may be a key, a SAS or a token).
    pub fn unreadable(what: &str, e: &serde_json::Error) -> Self {
        let message = e.to_string();
        let how = if message.starts_with("missing field") {
            // Names a field of the expected shape, nothing of the response.
            message
        } else {
            format!(
                "a {:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            )
            .to_lowercase()
        };
        Self::Unexpected(format!("{what} is not the JSON expected: {how}"))
    }

    /// Whether the same request may succeed later without a change on our side.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AzureError::Throttled { .. } | AzureError::Transport(_)
        ) || matches!(self, AzureError::Arm { status, .. } if *status >= 500)
    }
}
