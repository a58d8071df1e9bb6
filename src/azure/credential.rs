//! How the operator signs in: one [`Credential`] per resolved `AzureCredential` source, exchanging a
//! client secret or a client assertion at Entra ID's v2 token endpoint.
//!
//! The exchange is done here rather than through azure_identity 1.0: that crate reads Entra's error
//! body into a borrowed `&str`, which fails on every real `error_description` (they contain escaped
//! `\r\n`), so its errors lose the AADSTS code and the status the controllers report.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::cloud::{Cloud, Transport};
use super::error::AzureError;
use super::jwt;
use super::token_cache::Token;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Supplies client assertions (e.g. a Kubernetes ServiceAccount token from the TokenRequest API,
/// audience `api://AzureADTokenExchange`) for workload identity federation.
pub trait AssertionSource: Send + Sync + fmt::Debug {
    /// A fresh assertion. Errors must not contain the assertion.
    fn assertion(&self) -> BoxFuture<'_, Result<String, String>>;
}

/// What the credential proves its identity with.
#[derive(Clone)]
enum Proof {
    Secret(String),
    Assertion(Arc<dyn AssertionSource>),
}

/// A resolved credential: who signs in, and how. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Credential {
    /// Identifies the credential in the token cache (e.g. `AzureCredential/ns/name@generation`).
    pub key: String,
    /// The client id that signs in.
    pub client_id: String,
    tenant_id: String,
    token_url: String,
    http: reqwest::Client,
    proof: Proof,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("key", &self.key)
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorResponse {
    error: String,
    error_description: String,
    error_codes: Vec<i64>,
}

impl Credential {
    fn new(
        key: impl Into<String>,
        cloud: &Cloud,
        transport: &Transport,
        tenant_id: &str,
        client_id: &str,
        proof: Proof,
    ) -> Result<Self, AzureError> {
        let token_url = format!(
            "{}/{tenant_id}/oauth2/v2.0/token",
            cloud.authority_host.trim_end_matches('/')
        );
        Ok(Self {
            key: key.into(),
            client_id: client_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            token_url,
            http: transport.client()?,
            proof,
        })
    }

    /// A service principal with a client secret.
    pub fn client_secret(
        key: impl Into<String>,
        cloud: &Cloud,
        transport: &Transport,
        tenant_id: &str,
        client_id: &str,
        secret: String,
    ) -> Result<Self, AzureError> {
        if secret.is_empty() {
            return Err(AzureError::Credential("the client secret is empty".into()));
        }
        Self::new(
            key,
            cloud,
            transport,
            tenant_id,
            client_id,
            Proof::Secret(secret),
        )
    }

    /// Workload identity: `source`'s assertions exchanged for tokens of `client_id`.
    pub fn workload_identity(
        key: impl Into<String>,
        cloud: &Cloud,
        transport: &Transport,
        tenant_id: &str,
        client_id: &str,
        source: Arc<dyn AssertionSource>,
    ) -> Result<Self, AzureError> {
        Self::new(
            key,
            cloud,
            transport,
            tenant_id,
            client_id,
            Proof::Assertion(source),
        )
    }

    /// The tenant it signs in to.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// Requests a token for `audience` (a resource such as `https://storage.azure.com`), bypassing
    /// any cache: use [`super::TokenCache`] instead. `now` stamps when it was obtained.
    pub async fn request(&self, audience: &str, now: i64) -> Result<Token, AzureError> {
        let scope = format!("{}/.default", audience.trim_end_matches('/'));
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", self.client_id.clone()),
            ("scope", scope),
        ];
        match &self.proof {
            Proof::Secret(secret) => form.push(("client_secret", secret.clone())),
            Proof::Assertion(source) => {
                let assertion = source.assertion().await.map_err(AzureError::Credential)?;
                form.push(("client_assertion_type", JWT_BEARER.to_owned()));
                form.push(("client_assertion", assertion));
            }
        }
        let response = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| AzureError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| AzureError::Transport(e.without_url().to_string()))?;
        if !status.is_success() {
            let error: ErrorResponse = serde_json::from_str(&text).unwrap_or_default();
            let description = error
                .error_description
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            return Err(AzureError::Entra {
                status: status.as_u16(),
                codes: error
                    .error_codes
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                description: if description.is_empty() {
                    format!("{} ({status})", error.error)
                } else {
                    description
                },
            });
        }
        let parsed: TokenResponse = serde_json::from_str(&text)
            .map_err(|e| AzureError::Unexpected(format!("token response: {e}")))?;
        let claims = jwt::claims(&parsed.access_token).unwrap_or_default();
        // The token's own `exp` is the truth; `expires_in` is the fallback for opaque tokens.
        let expires_on = claims
            .exp
            .unwrap_or(now + parsed.expires_in.unwrap_or(3599));
        Ok(Token::new(parsed.access_token, now, expires_on, claims))
    }
}
